"""lapnet runs on Linux and macOS; native Windows is told, in one line, to use WSL2."""


def test_native_windows_is_refused_in_one_line(run_cli, monkeypatch):
    import lapnet.cli

    monkeypatch.setattr(lapnet.cli, "NATIVE_WINDOWS", True)
    code, out, err = run_cli("--version")
    assert code == 2 and out == ""
    assert err.strip() == ("lapnet: error: native Windows is not supported (run directories use POSIX file locks): "
                           "run lapnet in WSL2, where it works as on Linux")
