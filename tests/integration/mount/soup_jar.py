"""The libsoup fixture: the real client library both WebKit ports use to keep
cookies (Soup.CookieJarDB = cookies.sqlite, Soup.CookieJarText =
cookies.txt), driven through GObject introspection. Same bytes on disk as
the engines. Needs Debian's /usr/bin/python3 with gir1.2-soup-3.0.

Single-threaded; each call opens and drops its own jar.
"""

import gc

import gi

gi.require_version("Soup", "3.0")
from gi.repository import Soup  # noqa: E402

DOMAIN = "example.test"
YEAR = 365 * 24 * 3600


def open_jar(kind, path, read_only=False):
    if kind == "db":
        return Soup.CookieJarDB.new(path, read_only)
    return Soup.CookieJarText.new(path, read_only)


def cookie_set(jar):
    return {(c.get_name(), c.get_value(), c.get_domain(), c.get_path())
            for c in jar.all_cookies()}


def exercise(kind, path, rounds=3):
    """Adds, replaces and deletes cookies in the jar at path; returns the
    set of (name, value, domain, path) the jar must hold afterwards."""
    jar = open_jar(kind, path)
    for i in range(20):
        jar.add_cookie(Soup.Cookie.new(f"c{i:02d}", f"first-{i}" + "x" * i, DOMAIN, "/", YEAR))
    for r in range(rounds):
        for i in range(0, 20, 3):  # replace: same name, domain and path
            jar.add_cookie(Soup.Cookie.new(f"c{i:02d}", f"round{r}-{i}", DOMAIN, "/", YEAR))
    for i in range(1, 20, 5):
        jar.delete_cookie(Soup.Cookie.new(f"c{i:02d}", "", DOMAIN, "/", YEAR))
    jar.add_cookie(Soup.Cookie.new("sub", "path-scoped", DOMAIN, "/account", YEAR))
    expected = cookie_set(jar)
    del jar
    gc.collect()  # finalizes the jar: closes the sqlite connection / file
    return expected


def read(kind, path):
    """The cookies a fresh, read-only jar at path loads."""
    jar = open_jar(kind, path, read_only=True)
    try:
        return cookie_set(jar)
    finally:
        del jar
        gc.collect()
