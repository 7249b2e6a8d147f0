def pytest_configure(config):
    config.addinivalue_line("markers", "short: the quick tier (fastconv and PyTorch only)")
