#!/usr/bin/env bash
# `make docs`: the changelog and the docs site, as antsibull-changelog and antsibull-docs see them.
#   1. antsibull-changelog lints the fragments and changelogs/changelog.yaml, and CHANGELOG.md is what it generates;
#   2. antsibull-docs lint-collection-docs --plugin-docs (modules, filters, roles, extra docs, links.yml);
#   3. the docs site is built into $DOCS_DIR (sphinx-init, antsibull-docs collection, sphinx-build);
#   4. it has a page per module and filter that ansible-doc lists, per role with meta/argument_specs.yml
#      and per extra doc, and Sphinx warned about nothing but references it cannot resolve offline.
# Run from the tree's root with the docs venv first on PATH and the collection reachable through
# ansible.cfg's collections_path (the Makefile sets both).
set -euo pipefail

COLLECTION=netops.ip_transparency
DOCS_DIR=${DOCS_DIR:-.build/docs}
root=$PWD
collection_dir=$root/.collections/ansible_collections/netops/ip_transparency
fail() { echo "docs: $*" >&2; exit 1; }

# 1. changelog
antsibull-changelog lint
antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- . "$scratch/"
(cd "$scratch" && antsibull-changelog generate)
cmp -s CHANGELOG.md "$scratch/CHANGELOG.md" || {
  diff -u CHANGELOG.md "$scratch/CHANGELOG.md" | head -40 >&2
  fail "CHANGELOG.md is not what antsibull-changelog generates from changelogs/changelog.yaml (edit fragments, not CHANGELOG.md)"
}
echo "docs: changelog fragments and changelog.yaml lint clean, CHANGELOG.md is generated"

# 2. lint
antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs \
  --validate-collection-refs all --disallow-unknown-collection-refs "$collection_dir"
echo "docs: antsibull-docs lint-collection-docs passed"

# 3. site
rm -rf "$DOCS_DIR"
mkdir -p "$DOCS_DIR"
antsibull-docs sphinx-init --use-current --dest-dir "$DOCS_DIR" "$COLLECTION" >/dev/null
# No network here: no intersphinx inventories (python, jinja2, ansible's own docs). References into
# them stay unresolved and are the only warnings allowed below.
echo 'intersphinx_mapping = {}' >>"$DOCS_DIR/conf.py"
mkdir -p "$DOCS_DIR/rst"
chmod og-w "$DOCS_DIR/rst"
(cd "$DOCS_DIR" &&
  antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --use-current \
    --dest-dir rst "$COLLECTION" >/dev/null &&
  sphinx-build -M html rst build -c . -q -w sphinx-warnings.log --keep-going)
unexpected=$(grep 'WARNING\|ERROR' "$DOCS_DIR/sphinx-warnings.log" |
  grep -v "WARNING: undefined label: '\(ansible_configuration_settings\|common_return_values\|ansible_collections\.ansible\.builtin\.[a-z_]*\)'" || true)
[ -z "$unexpected" ] || { echo "$unexpected" >&2; fail "Sphinx warned about the collection's own pages"; }
echo "docs: Sphinx built the site; its $(grep -c WARNING "$DOCS_DIR/sphinx-warnings.log" || true) warnings above are references into ansible-core's docs, unresolvable offline"

# 4. a page per module, filter, role and extra doc
html=$DOCS_DIR/build/html/collections/netops/ip_transparency
listed() {
  ansible-doc -t "$1" -l --json "$COLLECTION" |
    python3 -c 'import json, sys; print("\n".join(sorted(n.rsplit(".", 1)[1] for n in json.load(sys.stdin))))'
}
pages() { find "$html" -maxdepth 1 -name "*_$1.html" -printf '%f\n' | sed "s/_$1\.html\$//" | sort; }
check_pages() { # kind, expected names (one a line)
  local want got
  want=$2
  got=$(pages "$1")
  [ -n "$want" ] || fail "no $1 to document"
  [ "$want" = "$got" ] || { diff <(echo "$want") <(echo "$got") >&2; fail "$1 pages differ from what the collection has (< missing, > extra)"; }
  echo "docs: $(wc -l <<<"$want") $1 pages: $(tr '\n' ' ' <<<"$want")"
}
check_pages module "$(listed module)"
check_pages filter "$(listed filter)"
check_pages role "$(find roles -mindepth 3 -maxdepth 3 -path '*/meta/argument_specs.yml' | cut -d/ -f2 | sort)"
extra=$(python3 -c 'import sys, yaml; print("\n".join(e for s in yaml.safe_load(open(sys.argv[1]))["sections"] for e in s["toctree"]))' \
  docs/docsite/extra-docs.yml)
for doc in $extra; do
  [ -s "$html/docsite/$doc.html" ] || fail "no page for the extra doc $doc"
done
echo "docs: the site is in $DOCS_DIR/build/html ($(wc -w <<<"$extra") guides)"
