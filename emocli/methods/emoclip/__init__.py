"""EmoCLIP (the SZU fork's improvement of EmoGen): contrastive fine-tune of CLIP's text tower on
"caption + emotion" texts, so the text encoder that EmoGen injects into knows emotions."""
