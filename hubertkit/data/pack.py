"""``hubertkit pack``: a split's audio in uncompressed tar archives of a chosen size, with
a manifest that names each member by byte offset (``archive.py`` reads them)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from hubertkit.data.audio import standalone_bytes, standalone_name
from hubertkit.data.manifest import Manifest, manifest_path, read_manifest
from hubertkit.errors import HubertkitError
from hubertkit.fileio import AtomicFile, atomic_lines, disk_error
from hubertkit.progress import progress_bar

SHARD_MB = 1024  # archive size: 60k h of FLAC in about 3,500 files


def pack(tsv_dir: str | os.PathLike, split: str, dest: str | os.PathLike, shard_mb: float = SHARD_MB,
         progress: bool = False) -> dict:
    """``hubertkit pack TSV_DIR SPLIT --dest DIR``: the split's audio (files, spans or
    members) in ``DIR/{split}-000000.tar``, ... of about ``shard_mb`` MB each, and
    ``DIR/{split}.tsv`` naming each member by byte offset. Each archive appears whole
    (temp + rename), the manifest last. Returns utterances, archives and bytes."""
    if not shard_mb > 0:
        raise HubertkitError(f"--shard-mb must be a positive number of megabytes, got {shard_mb}")
    manifest = read_manifest(manifest_path(tsv_dir, split))
    dest = output_folder(dest, manifest, tsv_dir)
    archives, total = 0, 0
    tar = shard = None
    out = manifest_path(dest, split)
    with atomic_lines(out) as write_line:  # each archive's lines as it closes; the manifest appears last
        write_line(f"{dest}\n")
        try:
            for utt in progress_bar(manifest.utterances, unit="utt", desc=f"pack {split}", disable=not progress):
                if tar is None:
                    shard = AtomicFile(dest / f"{split}-{archives:06d}.tar")
                    tar = tarfile.open(shard.tmp, "w", format=tarfile.PAX_FORMAT)
                    entries = []
                name, data = standalone_name(utt), standalone_bytes(utt, str(manifest.path))
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644  # no clock in the bytes: packing is reproducible
                tar.addfile(info, io.BytesIO(data))
                entries.append((name, utt.num_samples))
                total += len(data)
                if tar.offset >= shard_mb * 1e6:
                    write_line("".join(_close(tar, shard, entries)))
                    archives, tar = archives + 1, None
            if tar is not None:
                write_line("".join(_close(tar, shard, entries)))
                archives += 1
        except BaseException as e:  # nothing half-written stays: the open archive goes
            if shard is not None:
                shard.discard()
            if isinstance(e, OSError):
                raise disk_error(shard.path if shard else dest, e) from None
            raise
    return {"utterances": len(manifest), "archives": archives, "bytes": total, "manifest": str(out)}


def output_folder(dest: str | os.PathLike, manifest: Manifest, tsv_dir: str | os.PathLike) -> Path:
    """``dest``, created; refused when it is the manifest's folder or its audio root, whose
    files the output would overwrite."""
    dest = Path(dest).resolve()
    if dest == Path(manifest.root).resolve() or dest == Path(tsv_dir).resolve():
        raise HubertkitError(f"--dest {dest} would overwrite the manifest or audio it reads; give another folder")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def _close(tar: tarfile.TarFile, shard: AtomicFile, entries: list[tuple[str, int]]) -> list[str]:
    """Finish an archive; its manifest lines, with each member's data offset as the tar
    module reads it back."""
    tar.close()
    with tarfile.open(shard.tmp) as written:
        members = written.getmembers()
    shard.commit()
    return [f"{name}\t{samples}\t{shard.path.name}:{m.offset_data}:{m.size}\n"
            for (name, samples), m in zip(entries, members)]
