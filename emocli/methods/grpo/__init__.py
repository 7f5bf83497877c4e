"""GRPO emotion understanding on TRL's GRPOTrainer.

`questions` turns canonical EmoSet records into image-disjoint splits and question datasets in TRL's
conversational VLM format (binary, multiple-choice and misleading-choice questions); `rewards` holds the
TRL reward functions (accuracy, format, polarity) and the answer parser used for evaluation.
"""
