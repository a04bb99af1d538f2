"""What the tests share: the app in-process, served processes, forged tokens, fake issuers.

Test modules import from here, never from each other or from a conftest.
"""
