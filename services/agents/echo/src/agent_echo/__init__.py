"""The echo agent: the smallest complete mesh agent, and the template `make new-agent` starts from."""
