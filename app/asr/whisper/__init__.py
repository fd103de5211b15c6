"""Whisper tiny.en's pretrained network in PyTorch: file reader, encoder, decoder, tokenizer.

The weights come from a pip package (:mod:`app.asr.whisper.base`); a bundle stores only what was
trained here on top of them.
"""
