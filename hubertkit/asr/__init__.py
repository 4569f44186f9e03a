"""Speech recognition on top of the encoder: CTC decoding and transcription."""
