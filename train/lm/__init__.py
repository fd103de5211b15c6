"""The beam decoder's word language model: backoff n-gram tables, the pretrained base LM, mixing."""
