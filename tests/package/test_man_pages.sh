#!/bin/bash
# Every generated man page renders without a warning, as lintian checks it
# (man --warnings; MANWIDTH=80), and md2man.py escapes what roff would misread.
# Usage: test_man_pages.sh MAN_DIR MD2MAN. Exit 77 (skipped) without man, unless CI=true.
set -uo pipefail

dir=${1:?usage: test_man_pages.sh MAN_DIR MD2MAN}
md2man=${2:?usage: test_man_pages.sh MAN_DIR MD2MAN}

if ! command -v man >/dev/null; then
    [ "${CI:-}" = true ] && { echo "FAIL: man is not installed (CI=true)"; exit 1; }
    echo "SKIP: man is not installed (apt-get install man-db)"
    exit 77
fi

failed=0
render() {  # render FILE: stderr of lintian's man check
    LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$1" 2>&1 >/dev/null
}

pages=0
for page in clusterd.8 clusterd-worker.8 clusterd.yaml.5; do
    file=$dir/$page.gz
    if [ ! -s "$file" ]; then
        echo "FAIL: $file missing (build the clusterd-docs target)"
        failed=1
        continue
    fi
    pages=$((pages + 1))
    warnings=$(render "$file")
    if [ -n "$warnings" ]; then
        echo "FAIL: $page: man --warnings:"
        echo "$warnings"
        failed=1
    else
        echo "ok: $page renders without warnings"
    fi
    name=${page%.*}
    whatis=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$file" 2>/dev/null | sed -n '/^NAME/{n;p;q}')
    if [[ $whatis != *"$name - "* ]]; then
        echo "FAIL: $page: NAME section is \"$whatis\", expected \"$name - ...\""
        failed=1
    fi
done

# md2man.py: what roff would take for requests or escapes comes out literally.
work=$(mktemp -d /tmp/clusterd-md2man.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/sample.1.md" <<'MD'
---
title: sample
section: 1
date: 2026-01-01
---

# NAME

sample - a page of edge cases

# DESCRIPTION

A line with a backslash \\n and a path C:\\dir.

And `code with \e and --opt`.

.starts with a dot

'starts with a quote

Dashes: --long-option and -x, **bold** and *italic* and a literal \*star\*.

`--term` *ARG*
:   Its definition.

    Its second paragraph.

- a bullet
  that continues

```
.code line starting with a dot
  indented \ backslash -- dashes
```
MD
if ! python3 "$md2man" "$work/sample.1.md" "$work/sample.1" --source "sample 1.0"; then
    echo "FAIL: md2man.py failed on the sample"
    failed=1
else
    warnings=$(render "$work/sample.1")
    # Without the overstrikes that make bold and underlined text.
    text=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l -Tutf8 "$work/sample.1" 2>/dev/null |
        sed -e $'s/.\b//g')
    [ -n "$warnings" ] && { echo "FAIL: sample: $warnings"; failed=1; }
    for want in 'a backslash \n and a path C:\dir' 'code with \e and --opt' \
        '.starts with a dot' "'starts with a quote" '--long-option and -x' \
        'a literal *star*' 'Its second paragraph.' 'a bullet that continues' \
        '.code line starting with a dot' '  indented \ backslash -- dashes'; do
        if ! grep -qF -- "$want" <<<"$text"; then
            echo "FAIL: md2man sample: \"$want\" not in the rendered page"
            failed=1
        fi
    done
    [ $failed -eq 0 ] && echo "ok: md2man.py escapes backslashes, dots, quotes and dashes"
fi
# An unsupported construct is an error, not a silently wrong page.
printf -- '---\ntitle: x\nsection: 1\ndate: 2026-01-01\n---\n### too deep\n' >"$work/bad.1.md"
if python3 "$md2man" "$work/bad.1.md" "$work/bad.1" 2>/dev/null; then
    echo "FAIL: md2man.py accepted a ### heading"
    failed=1
fi

[ $pages -eq 3 ] && [ $failed -eq 0 ] && echo "PASS"
exit $failed
