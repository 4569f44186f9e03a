"""HuBERT for CTC: transformers interchange, the frozen encoder, greedy decoding,
chunked encoding of long audio, and transcription with error rates."""

import json

import pytest
import torch

from hubertkit.config import preset
from hubertkit.model.ctc import HubertCTC, export_hf_ctc, load_ctc, save_ctc
from hubertkit.model.decode import greedy_ids, ids_to_text
from hubertkit.recipes.transcribe import chunked_log_probs, error_rates, transcribe

LETTERS = list("|ETAOHNISRDLUWMCGFYPBKV'JXQZ")


def tiny_ctc(seed=0):
    torch.manual_seed(seed)
    return HubertCTC(preset("tiny"), LETTERS).eval()


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_ctc()
    export_hf_ctc(model, tmp_path / "hf")
    theirs = transformers.HubertForCTC.from_pretrained(tmp_path / "hf").eval()
    wav = torch.randn(2, 24000)
    with torch.no_grad():
        ours, _ = model(wav)
        ref = theirs(wav).logits.log_softmax(-1)
    assert ours.shape == ref.shape and (ours - ref).abs().max() < 1e-5
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path / "hf")
    ids = [5, 5, 0, 6, 4, 7, 0, 7]  # A A _ O | H _ H  -> "AO HH" after collapsing
    assert tokenizer.decode(ids) == ids_to_text(greedy_ids(torch.nn.functional.one_hot(torch.tensor(ids), 32).float()),
                                                model.vocab)


def test_checkpoint_and_hf_folder_load_back(tmp_path):
    model = tiny_ctc()
    save_ctc(model, tmp_path / "ctc.pt")
    export_hf_ctc(model, tmp_path / "hf")
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        ref, _ = model(wav)
        for path in (tmp_path / "ctc.pt", tmp_path / "hf"):
            back = load_ctc(path)
            assert back.symbols == LETTERS
            assert torch.allclose(back(wav)[0], ref, atol=1e-6)


def test_encoder_is_frozen_before_freeze_finetune_updates():
    model = tiny_ctc().train()
    model.freeze_finetune_updates = 10
    for updates, encoder_learns in ((0, False), (10, True)):
        model.zero_grad()
        model(torch.randn(2, 16000), num_updates=updates)[0].sum().backward()
        assert model.proj.weight.grad is not None
        enc = model.hubert.encoder.layers[0].fc1.weight.grad
        assert (enc is not None and enc.abs().sum() > 0) == encoder_learns


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "|", "H", "I"]
    ids = [0, 5, 5, 0, 5, 6, 4, 4, 0, 6, 3]  # H H _ H I | | _ I <unk>
    scores = torch.nn.functional.one_hot(torch.tensor(ids), len(vocab)).float()
    assert greedy_ids(scores) == [5, 5, 6, 4, 6, 3]
    assert ids_to_text(greedy_ids(scores), vocab) == "HHI I"


def test_chunks_give_every_frame_once_from_its_own_chunk():
    model = tiny_ctc()
    wav = torch.randn(16000 * 3 + 123)
    with torch.no_grad():
        full = model(wav[None])[0][0]
        assert torch.equal(chunked_log_probs(model, wav, 16000 * 10, 800), full)  # fits in one pass
        chunked = chunked_log_probs(model, wav, 16000, 800)
        assert chunked.shape == full.shape
        # frames 50..99 have their centres in [16000, 32000): the second chunk, encoded with context
        seg = model(wav[None, 16000 - 960 : 32000 + 960])[0][0]
        assert torch.equal(chunked[50:100], seg[3:53])


def test_transcribe_a_manifest_with_references(tmp_path, prepared, demo_dir):
    save_ctc(tiny_ctc(), tmp_path / "ctc.pt")
    out = transcribe(tmp_path / "ctc.pt", [str(prepared / "tsv" / "valid.tsv")], batch_size=3,
                     references=demo_dir / "alignments.jsonl", progress=False)
    assert len(out) == len((prepared / "tsv" / "valid.tsv").read_text().splitlines()) - 1
    assert all(t.reference and t.reference.isupper() for t in out)
    rates = error_rates(out)
    import jiwer

    assert rates["cer"] == pytest.approx(jiwer.cer([t.reference for t in out], [t.text for t in out]))
    assert rates["wer"] >= 0.9  # an untrained model
    json.dumps(rates)


def test_random_transformers_ctc_model_imports_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.HubertConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                                    conv_dim=(64,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                    vocab_size=4 + len(LETTERS), pad_token_id=0)
    torch.manual_seed(1)
    theirs = transformers.HubertForCTC(cfg).eval()
    theirs.save_pretrained(tmp_path / "hf")
    vocab = {s: i for i, s in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + LETTERS)}
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(vocab))
    ours = load_ctc(tmp_path / "hf")
    wav = torch.randn(2, 20000)
    with torch.no_grad():
        assert (ours(wav)[0] - theirs(wav).logits.log_softmax(-1)).abs().max() < 1e-5


def test_transcribe_and_export_commands(tmp_path, prepared, demo_dir):
    from test_cli import hubertkit

    save_ctc(tiny_ctc(), tmp_path / "ctc.pt")
    root, *rows = (prepared / "tsv" / "valid.tsv").read_text().splitlines()
    wavs = [f"{root}/{row.split(chr(9))[0]}" for row in rows[:2]]
    r = hubertkit("transcribe", tmp_path / "ctc.pt", *wavs, "--format", "jsonl", "-q")
    assert [json.loads(l)["path"] for l in r.stdout.splitlines()] == wavs
    r = hubertkit("transcribe", tmp_path / "ctc.pt", prepared / "tsv" / "valid.tsv", "--references",
                  demo_dir / "alignments.jsonl", "-q")
    assert set(json.loads(r.stderr.strip().splitlines()[-1])) == {"wer", "cer", "utterances"}
    r = hubertkit("export", tmp_path / "ctc.pt", tmp_path / "hf")
    assert "HubertForCTC" in r.stdout and (tmp_path / "hf" / "vocab.json").is_file()
    assert hubertkit("export", tmp_path / "ctc.pt", tmp_path / "x.pt", "--format", "fairseq", check=False).returncode == 2


def test_references_from_a_wrd_file_follow_the_manifest(tmp_path, prepared, demo_dir):
    from hubertkit.data.text import prepare_text

    prepare_text(prepared / "tsv", ["valid"], tmp_path, demo_dir / "alignments.jsonl")
    save_ctc(tiny_ctc(), tmp_path / "ctc.pt")
    out = transcribe(tmp_path / "ctc.pt", [str(prepared / "tsv" / "valid.tsv")], references=tmp_path / "valid.wrd",
                     progress=False)
    assert [t.reference for t in out] == (tmp_path / "valid.wrd").read_text().splitlines()
