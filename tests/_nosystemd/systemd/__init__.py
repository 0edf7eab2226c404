# Shadows the real systemd package in a subprocess, to test the no-python3-systemd path.
raise ImportError("systemd hidden for this test")
