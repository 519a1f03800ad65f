"""What offers load and what the worker is compared with: the rate producer and its profiles, the
bare loop, the pass-through, the bare Faust agent, the delay proxy, and the child processes they
run in."""
