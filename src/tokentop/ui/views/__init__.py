"""Pure view models of the screens: no Textual here."""
