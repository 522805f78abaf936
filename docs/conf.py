"""Sphinx settings for docs/ (optional: ``pip install sphinx`` then ``sphinx-build docs docs/_build``).

The pages link to each other as ``page.rst`` so that they read on a code host without a build; the
small hook below points those links at the built ``page.html`` instead."""

project = "loadgen"
root_doc = master_doc = "contents"  # contents.rst holds the toctree; index.rst reads on a code host
exclude_patterns = ["_build"]
html_theme = "alabaster"


def _built_links(app, doctree, docname):
    from docutils import nodes

    for ref in doctree.findall(nodes.reference):
        uri = ref.get("refuri", "")
        if uri and "://" not in uri and "/" not in uri and uri.split("#")[0].endswith(".rst"):
            path, _, anchor = uri.partition("#")
            ref["refuri"] = path[:-len(".rst")] + ".html" + (f"#{anchor}" if anchor else "")


def setup(app):
    app.connect("doctree-resolved", _built_links)
    return {"parallel_read_safe": True}
