#!/usr/bin/env python
"""Django's command-line utility, for working from a source checkout."""

from chatstack.manage import main

if __name__ == "__main__":
    main()
