"""The review dock widget: a magicgui ``Container`` over a :class:`~.session.ReviewSession`.

Its children are attributes (``widget.accept_button``, ``widget.threshold``, ``widget.table``...),
so tests and scripts reach them directly. Every decision, draft and queue rule lives in the pure
modules; this file wires them to napari layers, buttons and keys.

Keys (bound on the viewer): Shift-A accept, Shift-X reject, Shift-S save the edited label,
Shift-N next case, Shift-B previous case, Shift-D toggle disagreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSlider, Label, LineEdit, PushButton,
                              Table)

from medssl.inference.review_manifest import STATUSES

from . import _layers
from .geometry import from_display
from .overlays import merge_thresholded, threshold_label
from .queue import TABLE_HEADERS, Order, table_rows
from .session import ReviewSession, default_reviewer

ALL = "all"
AUTOSAVE_MS = 1500  # a draft is written this long after the last brush stroke


class ReviewWidget(Container):
    """Review queue and decisions for one export (see the module docstring).

    Args:
        viewer: the napari viewer (napari passes it to a widget contribution).
        export: an export folder or manifest to open at once (else use the folder field).
        reviewer: the name recorded with each decision (default: ``$MEDSSL_REVIEWER`` or login).
    """

    def __init__(self, viewer, export: str | Path | None = None, reviewer: str | None = None):
        super().__init__(labels=False)
        self._viewer = viewer
        self.session: ReviewSession | None = None
        self.current: str | None = None
        self.data = None  # CaseData of the current case, the only one held (plus the preloaded next)
        self.dirty = False
        self._shown_threshold = 1.0

        self.folder = FileEdit(mode="d", label="export", value=str(export) if export else "")
        self.open_button = PushButton(text="Open export")
        self.reviewer = LineEdit(label="reviewer", value=reviewer or default_reviewer())
        self.order = ComboBox(label="order", choices=[o.value for o in Order], value=Order.confidence.value)
        self.status_filter = ComboBox(label="show", choices=[ALL, *STATUSES], value=ALL)
        self.progress = Label(value="no export open")
        self.table = Table(value={"data": [], "index": [], "columns": TABLE_HEADERS})
        self.case_info = Label(value="")
        self.threshold = FloatSlider(label="hide uncertainty >", min=0.0, max=1.0, step=0.01, value=1.0)
        self.show_disagreement = CheckBox(text="show disagreement [Shift-D]", value=False)
        self.accept_button = PushButton(text="Accept [Shift-A]")
        self.reject_button = PushButton(text="Reject [Shift-X]")
        self.save_button = PushButton(text="Save edit [Shift-S]")
        self.previous_button = PushButton(text="< Previous [Shift-B]")
        self.next_button = PushButton(text="Next > [Shift-N]")
        self.extend([
            Container(widgets=[self.folder, self.open_button, self.reviewer, self.order, self.status_filter]),
            self.progress, self.table, self.case_info, Container(widgets=[self.threshold]), self.show_disagreement,
            Container(widgets=[self.accept_button, self.reject_button, self.save_button], layout="horizontal", labels=False),
            Container(widgets=[self.previous_button, self.next_button], layout="horizontal", labels=False),
        ])
        self._setup_table()
        self.open_button.changed.connect(lambda: self.open(self.folder.value))
        self.order.changed.connect(self.refresh_queue)
        self.status_filter.changed.connect(self.refresh_queue)
        self.reviewer.changed.connect(self._set_reviewer)
        self.threshold.changed.connect(self._apply_threshold)
        self.show_disagreement.changed.connect(self._toggle_disagreement)
        self.accept_button.changed.connect(self.accept)
        self.reject_button.changed.connect(self.reject)
        self.save_button.changed.connect(self.save)
        self.next_button.changed.connect(self.next)
        self.previous_button.changed.connect(self.previous)

        self.shortcuts = {"Shift-A": self.accept, "Shift-X": self.reject, "Shift-S": self.save, "Shift-N": self.next,
                          "Shift-B": self.previous,
                          "Shift-D": lambda: setattr(self.show_disagreement, "value", not self.show_disagreement.value)}
        for key, fn in self.shortcuts.items():
            viewer.bind_key(key, lambda _viewer, fn=fn: fn(), overwrite=True)

        from qtpy.QtCore import QTimer

        self._autosave_timer = QTimer(self.native)  # owned by the widget: deleted with it
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        if export:
            self.open(export)

    # ------------------------------------------------------------------ queue
    def _setup_table(self) -> None:
        from qtpy.QtWidgets import QAbstractItemView

        native = self.table.native
        native.setEditTriggers(QAbstractItemView.NoEditTriggers)
        native.setSelectionBehavior(QAbstractItemView.SelectRows)
        native.setSelectionMode(QAbstractItemView.SingleSelection)
        native.cellDoubleClicked.connect(lambda row, _col: self.show(self.visible_names()[row]))
        native.setMinimumHeight(180)
        native.verticalHeader().setVisible(False)

    def _status(self) -> str | None:
        return None if self.status_filter.value == ALL else self.status_filter.value

    def visible_names(self) -> list[str]:
        """Case names in the table, in queue order."""
        if self.session is None:
            return []
        return [c.name for c in self.session.queue(self.order.value, self._status())]

    def refresh_queue(self, *_args) -> None:
        if self.session is None:
            return
        cases = self.session.queue(self.order.value, self._status())
        self.table.value = {"data": table_rows(cases), "index": list(range(len(cases))), "columns": TABLE_HEADERS}
        self.progress.value = self.session.progress()
        self.table.native.resizeColumnsToContents()
        names = [c.name for c in cases]
        if self.current in names:
            self.table.native.selectRow(names.index(self.current))

    def _set_reviewer(self, *_args) -> None:
        if self.session is not None:
            self.session.reviewer = self.reviewer.value.strip() or default_reviewer()

    # ------------------------------------------------------------------ opening
    def open(self, export: str | Path) -> None:
        """Open an export folder (or manifest) and show its first queued case."""
        self.close_session()
        self.session = ReviewSession(export, reviewer=self.reviewer.value.strip() or None)
        self.folder.value = str(self.session.export_dir)
        self.refresh_queue()
        first = self.session.neighbour(None, +1, self.order.value, self._status())
        if first is not None:
            self.show(first)

    def show(self, name: str) -> None:
        """Make ``name`` the current case (the previous one's unsaved edits go to its draft)."""
        if self.dirty:
            self.autosave()
        self.data = None  # let the previous case go before the next is taken
        data = self.session.load(name)
        self.current, self.data, self.dirty = name, data, False
        self._shown_threshold = float(self.threshold.value)
        label = _layers.show_case(self._viewer, data, self.session.classes, self._shown(data.label),
                                  self.show_disagreement.value)
        if not getattr(label, "_medssl_connected", False):
            label.events.paint.connect(self._on_paint)
            label._medssl_connected = True
        case = self.session.case(name)
        self.case_info.value = (f"{name}: {case.status}, showing the {data.label_source.replace('-', ' ')}"
                                f" (confidence {case.confidence:.3f})")
        self.refresh_queue()
        self.session.preload(self.session.neighbour(name, +1, self.order.value, self._status()))

    def close_session(self) -> None:
        if self.session is not None:
            if self.dirty:
                self.autosave()
            self.session.close()
        self.session, self.current, self.data = None, None, None

    # ------------------------------------------------------------------ label editing
    def _shown(self, full: np.ndarray) -> np.ndarray:
        return threshold_label(full, self.data.uncertainty, self._shown_threshold) if self._shown_threshold < 1.0 else full

    def _on_paint(self, *_args) -> None:
        self.dirty = True
        self._autosave_timer.start()

    def current_label(self) -> np.ndarray:
        """The full ``(X, Y, Z)`` uint8 label with the reviewer's edits (hidden voxels folded back)."""
        shown = from_display(np.asarray(self._viewer.layers[_layers.LABEL].data))
        if self._shown_threshold >= 1.0:
            return shown
        return merge_thresholded(shown, self.data.label, self.data.uncertainty, self._shown_threshold)

    def autosave(self) -> None:
        """Write the current edits to the case's draft (restored when the case is opened again)."""
        self._autosave_timer.stop()
        if self.session is None or self.current is None or not self.dirty:
            return
        self.session.save_draft(self.current, self.current_label())
        self.dirty = False

    def _apply_threshold(self, value: float) -> None:
        if self.data is None:
            return
        full = self.current_label()
        self.data.label = np.ascontiguousarray(full)
        self._shown_threshold = float(value)
        layer = self._viewer.layers[_layers.LABEL]
        layer.data = _layers.to_display(self._shown(self.data.label))

    def _toggle_disagreement(self, value: bool) -> None:
        if _layers.DISAGREEMENT in self._viewer.layers:
            self._viewer.layers[_layers.DISAGREEMENT].visible = bool(value)

    # ------------------------------------------------------------------ decisions
    def _advance(self) -> None:
        nxt = self.session.neighbour(self.current, +1, self.order.value, self._status())
        if nxt is not None:
            self.show(nxt)
        else:
            self.refresh_queue()
            self.case_info.value = f"{self.current}: {self.session.case(self.current).status} (end of the queue)"

    def accept(self, *_args) -> None:
        """Accept the current pseudo-label as it is and go to the next case."""
        if self.current is None:
            return
        self._autosave_timer.stop()
        self.dirty = False
        self.session.accept(self.current)
        self._advance()

    def reject(self, *_args) -> None:
        if self.current is None:
            return
        self._autosave_timer.stop()
        self.dirty = False
        self.session.reject(self.current)
        self._advance()

    def save(self, *_args) -> Path | None:
        """Save the edited label as a new file in ``reviewed/``, mark the case edited, go on."""
        if self.current is None:
            return None
        self._autosave_timer.stop()
        path = self.session.save_edit(self.current, self.current_label(), geometry=self.data.image)
        self.dirty = False
        self._advance()
        return path

    def next(self, *_args) -> None:
        if self.current is not None:
            nxt = self.session.neighbour(self.current, +1, self.order.value, self._status())
            if nxt is not None:
                self.show(nxt)

    def previous(self, *_args) -> None:
        if self.current is not None:
            prev = self.session.neighbour(self.current, -1, self.order.value, self._status())
            if prev is not None:
                self.show(prev)
