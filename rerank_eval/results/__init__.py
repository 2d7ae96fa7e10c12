"""Result folders: written atomically and read back (`folder`), with the checks a folder read from
elsewhere must pass (`checks`)."""
