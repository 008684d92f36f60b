"""Dialogs: ConfirmModal before signalling processes, BudgetModal to set a session's budget."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tokentop.config import Budget
from tokentop.quantities import QuantityError, parse_tokens, parse_usd
from tokentop.render import figures as fmt


class ConfirmModal(ModalScreen[bool]):
    """Asks before an action; `y` confirms, `n` or escape cancels, Cancel has the focus."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "choose(True)", "Yes", show=False),
        Binding("n,escape", "choose(False)", "No", show=False),
    ]

    def __init__(self, title: str, body: Text, confirm_label: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm_label} (y)", variant="error", id="confirm")
                yield Button("Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_choose(self, yes: bool) -> None:
        self.dismiss(yes)


class BudgetChoice(NamedTuple):
    """The result of BudgetModal: a budget for the session, or None to use the config's."""

    budget: Budget | None


class BudgetModal(ModalScreen[BudgetChoice | None]):
    """Edits one session's budget; an empty field means no limit of that kind."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, label: str, current: Budget, kept: bool = True) -> None:
        super().__init__()
        self.label = label
        self.current = current
        self.where = (
            "Saved in tokentop's store: the hook, guard and run honour it within seconds."
            if kept
            else "For this run only: no store, so the hook, guard and run do not see it."
        )

    def compose(self) -> ComposeResult:
        usd = "" if self.current.usd is None else f"{self.current.usd:.2f}".removesuffix(".00")
        tokens = "" if self.current.tokens is None else fmt.compact(self.current.tokens)
        with Vertical(classes="dialog"):
            yield Label(f"Budget for {self.label}", classes="dialog-title")
            yield Label("Dollars (empty: no dollar limit)")
            yield Input(usd, placeholder="e.g. 5 or 2.50", id="usd")
            yield Label("Tokens (empty: no token limit; 500k, 2M accepted)")
            yield Input(tokens, placeholder="e.g. 2M", id="tokens")
            yield Static(self.where, id="budget-where")
            yield Static("", id="budget-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Use config", id="reset")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self) -> None:
        self.save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.save()
        elif event.button.id == "reset":
            self.dismiss(BudgetChoice(None))
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def save(self) -> None:
        try:
            usd = parse_usd(self.query_one("#usd", Input).value)
            tokens = parse_tokens(self.query_one("#tokens", Input).value)
        except QuantityError as exc:
            self.query_one("#budget-error", Static).update(str(exc))
            return
        budget = Budget(usd, tokens)
        removed = self.current.removed_by(budget)
        if not removed:
            self.dismiss(BudgetChoice(budget))
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.dismiss(BudgetChoice(budget))

        limits = {"usd": f"the {fmt.usd(self.current.usd)} limit", "tokens": "the token limit"}
        if self.current.tokens is not None:
            limits["tokens"] = f"the {fmt.compact(self.current.tokens)}-token limit"
        what = " and ".join(limits[k] for k in removed)
        body = Text(
            f"The field is empty: saving removes {what} of {self.label}, and it may then spend "
            "without that limit.\n(To go back to the config's budget, use 'Use config'.)"
        )
        self.app.push_screen(ConfirmModal(f"Remove {what}?", body, "Remove"), answered)
