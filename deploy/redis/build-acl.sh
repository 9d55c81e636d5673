#!/bin/sh
# Build the ACL file Redis loads from the committed rules (users.acl, no passwords) and one password file per user.
#
#   build-acl.sh RULES PASSWORD_DIR OUT
#
# Each `user NAME ...` line of RULES gets NAME's password from PASSWORD_DIR/NAME, stored as its SHA-256 (`#<hex>`),
# so OUT holds no clear-text password. A user without a password file keeps no password and cannot log in (said on
# standard error); an empty password, a placeholder (CHANGE-ME...) or a missing RULES file stops the build, so Redis
# never starts with a password that was never set. OUT is written beside itself and renamed, mode 0600.
# POSIX sh and coreutils only: it runs in the Redis image (Kubernetes init container, compose entrypoint) and in
# tests/deploy/test_redis_acl.py.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: build-acl.sh RULES PASSWORD_DIR OUT" >&2
    exit 2
fi
rules=$1
passwords=$2
out=$3
[ -r "$rules" ] || { echo "build-acl: cannot read the rules file $rules" >&2; exit 2; }

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
: > "$tmp"
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        "user "*) ;;
        *) continue ;;  # blank lines: the ACL file format has no comments (a '#' starts a password hash)
    esac
    name=$(printf '%s\n' "$line" | cut -d' ' -f2)
    file="$passwords/$name"
    if [ ! -e "$file" ]; then
        [ "$name" = default ] || echo "build-acl: no password file $file: user $name cannot log in" >&2
        printf '%s\n' "$line" >> "$tmp"
        continue
    fi
    password=$(cat "$file")  # $(...) drops the trailing newline an editor or `echo` leaves
    case "$password" in
        "") echo "build-acl: $file is empty" >&2; exit 1 ;;
        CHANGE-ME*) echo "build-acl: $file still holds the example placeholder" >&2; exit 1 ;;
    esac
    hash=$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)
    printf '%s #%s\n' "$line" "$hash" >> "$tmp"
done < "$rules"
mv "$tmp" "$out"
trap - EXIT
