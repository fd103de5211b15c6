"""Speech recognition math: audio decoding, features, the acoustic model, CTC decoding, bundles.

Nothing in this package knows about HTTP; the training recipe imports it as the server does.
"""
