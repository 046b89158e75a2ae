"""``--target``: which class each sample's map explains.

* ``predicted`` (the default): the model's top class;
* a class index, e.g. ``207``: that class for every sample;
* ``label``: the sample's label (a folder's class subfolder, an index file's ``label`` column);
* any other word: that column of the index file, a class index per row.

A sample whose label or column is not a class index gets no map: its index row says why.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import UsageError
from .sources import Sample, Source, _as_index

__all__ = ["TargetSpec", "parse_target"]


@dataclass(frozen=True)
class TargetSpec:
    kind: str
    """``predicted``, ``class``, ``label`` or ``column``."""
    value: int | str | None = None

    def describe(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    def of(self, sample: Sample) -> tuple[int | None, str]:
        """(class index or None for the predicted class, '' or why the sample has no target)."""
        if self.kind == "predicted":
            return None, ""
        if self.kind == "class":
            return int(self.value), ""
        if self.kind == "label":
            if sample.label_index is None:
                return None, f"no target: label {sample.label!r} is not a class index" if sample.label else \
                    "no target: the sample has no label"
            return sample.label_index, ""
        text = sample.fields.get(str(self.value), "")
        index = _as_index(text)
        if index is None:
            return None, f"no target: column {self.value!r} holds {text!r}, not a class index"
        return index, ""


def parse_target(text: str | None, source: Source) -> TargetSpec:
    """The ``--target`` argument, checked against the source."""
    if text is None or text == "predicted":
        return TargetSpec("predicted")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is not None:
        if value < 0:
            raise UsageError(f"--target {text}: a class index is 0 or more")
        return TargetSpec("class", value)
    if text == "label":
        if not any(s.label_index is not None for s in source.samples):
            where = ("class subfolders" if source.kind == "folder" else "a 'label' column of class indices")
            raise UsageError(f"--target label: {source.location!r} has no labels ({where}); use --target predicted")
        return TargetSpec("label")
    if text not in source.columns:
        have = f"its columns: {', '.join(source.columns)}" if source.columns else "a folder has no columns"
        raise UsageError(f"--target {text!r} is neither predicted, label, a class index nor a column of "
                         f"{source.location!r} ({have})")
    return TargetSpec("column", text)
