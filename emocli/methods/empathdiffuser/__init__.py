"""EmpathDiffuser (seed 002): UniDiffuser fine-tuned on AvaMERG to answer a speaker's utterance and face
with an empathetic reply and a listener face, plus the speaker's emotion.

config.py (recipes), model.py (the conditional U-ViT with the [EMO] head), features.py (UniDiffuser's
encodings, cached), train.py (`emo train empathdiffuser`), sample.py (DPM-Solver++ with guidance, reply
decoding; `emo empathize`), evaluate.py (`emo eval empathy`). docs/empathdiffuser.md says what differs
from the paper and the public code, and why.
"""
