"""Pure domain rules: states, transitions, planning. No framework imports here."""
