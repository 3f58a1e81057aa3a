# Sourced by bench/pgo.sh and bench/floor_pgo.sh: sets `profdata` to an llvm-profdata of rustc's
# own LLVM major version (a profile's format follows it), or exits 2 saying what to install.
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=
for p in "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" llvm-profdata; do
    if command -v "$p" >/dev/null && "$p" --version 2>/dev/null | grep -q "LLVM version $major\."; then
        profdata=$p
        break
    fi
done
[[ -n "$profdata" ]] || {
    echo "$(basename "$0"): no llvm-profdata of LLVM $major (rustc's): apt-get install llvm-$major" >&2
    exit 2
}
