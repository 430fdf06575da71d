"""Where and how a step runs: profiles, scheduler backends, containers and the controller."""
