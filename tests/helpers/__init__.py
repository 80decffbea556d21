"""What test modules share. A test module imports helpers from here (and fixtures from a
conftest), never from another test module: test_layering checks it, so moving or renaming a
test never breaks another one."""
