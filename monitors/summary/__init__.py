"""The weekly compliance summary: computed from stored state, rendered for Teams and as HTML."""
