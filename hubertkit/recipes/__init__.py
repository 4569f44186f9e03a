"""What hubertkit builds on its core: the iterative pipeline and its report, the demo,
probes, unit extraction, transcription and unit-based ASR."""
