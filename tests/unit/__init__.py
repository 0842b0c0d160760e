"""Pure unit tests: rules, state machines and the recorder's arithmetic, as tables of cases."""
