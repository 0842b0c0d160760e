"""Real processes: `telephony serve` and the CLI as subprocesses, SIGKILL, two nodes, the fuzzer."""
