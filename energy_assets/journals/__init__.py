"""The two append-only journals the warehouse is derived from, their archive, the rebuild of
the warehouse from them and the replay of the desk's view at a past instant (docs/journals.md)."""
