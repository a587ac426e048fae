#!/bin/sh
# Runs every cmocka binary given, each with a time limit (UNIT_TIMEOUT
# seconds, 600 by default), and prints one closing line with the test counts
# summed: "unit: N passed, M failed, K skipped".
passed=0
failed=0
skipped=0
limit=${UNIT_TIMEOUT:-600}
for t in "$@"; do
    echo "== $t"
    out=$(timeout "$limit" "$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -vE '^\[ (RUN|      OK) '
    [ "$rc" -eq 124 ] && echo "$t: killed after ${limit}s"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    k=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed or timed out before cmocka could count
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + k))
done
echo "unit: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
