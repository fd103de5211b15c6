"""Data recipe: text corpus, speech synthesis, real-speech manifests and augmentation."""
