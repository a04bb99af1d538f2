"""The service's templates: one Jinja2 environment over every capability's own folder.

The convention (ARCHITECTURE.md): a capability's templates live in
`auth_service/<capability>/templates/` and are named `<capability>/<file>` (the error page is
`web/error.html`, a hosted sign-in page would be `login/sign_in.html`), beside the code that
fills them, so a new capability brings its pages and mails in its own folder and nothing
else is edited to find them. Its static files live in `auth_service/<capability>/static/`
(`web/pages.py` serves them). Everything under `auth_service/` is packed into the wheel.

No web framework here: a mail service renders its templates as the pages do.
"""

from pathlib import Path

import jinja2

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # auth_service/
TEMPLATES = "templates"


def environment(root: Path = PACKAGE_DIR) -> jinja2.Environment:
    """Every `<capability>/templates/` folder under `root`, each under its capability's name.

    Autoescape is on for every template but plain text (`.txt`, a mail's text part): a
    value from a request or a user can never become markup. An undefined name is an error,
    not an empty string, so a misspelt variable fails the test that renders it.
    """
    loader = jinja2.PrefixLoader(
        {
            folder.parent.name: jinja2.FileSystemLoader(folder)
            for folder in sorted(root.glob(f"*/{TEMPLATES}"))
            if folder.is_dir()
        }
    )
    return jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(
            disabled_extensions=("txt",), default_for_string=True, default=True
        ),
        undefined=jinja2.StrictUndefined,
    )
