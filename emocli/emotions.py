"""Emotion taxonomies: EmoSet (Mikels 8), ArtEmis (9) and AvaMERG (32 fine -> 7 coarse).

Index orders are facts of the datasets and of the released checkpoints; never reorder them.
Every lookup rejects unknown names and lists the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from emocli.errors import EmoError, close_matches


@dataclass(frozen=True)
class Taxonomy:
    name: str
    labels: tuple[str, ...]
    # label -> "positive" | "negative" | "other"; empty when the taxonomy has no polarity
    polarity_of: dict | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def index(self, label: str) -> int:
        """Index of `label`; an unknown label raises EmoError listing the valid ones."""
        key = str(label).strip().lower()
        if key not in self.labels:
            raise EmoError(
                f"unknown {self.name} emotion {label!r}{close_matches(key, self.labels)}; "
                f"valid: {', '.join(self.labels)}"
            )
        return self.labels.index(key)

    def validate(self, label: str) -> str:
        return self.labels[self.index(label)]

    def label(self, index: int) -> str:
        if not 0 <= int(index) < len(self.labels):
            raise EmoError(f"{self.name} emotion index {index} is out of range 0..{len(self.labels) - 1}")
        return self.labels[int(index)]

    def polarity(self, label: str) -> str:
        if not self.polarity_of:
            raise EmoError(f"the {self.name} taxonomy has no polarity")
        return self.polarity_of[self.validate(label)]


_POSITIVE = ("amusement", "awe", "contentment", "excitement")
_NEGATIVE = ("anger", "disgust", "fear", "sadness")

EMOSET = Taxonomy(
    name="EmoSet",
    labels=_POSITIVE + _NEGATIVE,
    polarity_of={**{e: "positive" for e in _POSITIVE}, **{e: "negative" for e in _NEGATIVE}},
)

ARTEMIS = Taxonomy(
    name="ArtEmis",
    labels=_POSITIVE + _NEGATIVE + ("something else",),
    polarity_of={**EMOSET.polarity_of, "something else": "other"},
)

# AvaMERG speaker emotions: EmpatheticDialogues' 32 fine labels grouped into 7 coarse classes
# (EmpathDiffuser's grouping; coarse index order happy 0 ... sad 6). The grouping ships as a data file
# (emocli/data/files/avamerg_emotion_groups.json) that names where it comes from.
def _load_avamerg_groups() -> dict[str, tuple[str, ...]]:
    import json
    from importlib import resources

    data = json.loads(resources.files("emocli.data").joinpath("files/avamerg_emotion_groups.json").read_text())
    return {coarse: tuple(data["groups"][coarse]) for coarse in data["coarse_order"]}


AVAMERG_GROUPS: dict[str, tuple[str, ...]] = _load_avamerg_groups()
AVAMERG_COARSE = Taxonomy(name="AvaMERG coarse", labels=tuple(AVAMERG_GROUPS))
AVAMERG_FINE = Taxonomy(
    name="AvaMERG fine", labels=tuple(sorted(f for group in AVAMERG_GROUPS.values() for f in group))
)
_FINE_TO_COARSE = {fine: coarse for coarse, group in AVAMERG_GROUPS.items() for fine in group}


def avamerg_coarse(fine_label: str) -> str:
    """Map one of the 32 fine AvaMERG/ED labels onto its coarse class."""
    return _FINE_TO_COARSE[AVAMERG_FINE.validate(fine_label)]


TAXONOMIES = {"emoset": EMOSET, "artemis": ARTEMIS, "avamerg": AVAMERG_COARSE, "avamerg-fine": AVAMERG_FINE}
