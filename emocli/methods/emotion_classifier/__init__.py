"""The Emo-A classifier: a linear 8-way head on cached CLIP image features of a prepared EmoSet."""
