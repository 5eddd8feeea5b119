// fingerprint.h — 64-bit SimHash fingerprints of what a request adds to a conversation, for
// the repetition detector. Only hashes leave this module: prompt text is never stored.
//
// A request's fingerprint covers its "new content" (the last user/tool messages and tool-call
// arguments, which the caller extracts) AND the previous assistant turn. Without the latter, a
// human typing "continue" after each new answer would look like a loop; with it, the same
// request only repeats when the model also said the same thing before it.
//
// Near-identical texts give fingerprints a small Hamming distance apart: SimHash over word
// 3-gram shingles, after normalization erases what differs between honest retries (ids,
// timestamps, whitespace, case).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ab::loops {

// Lower-cases ASCII, collapses every run of whitespace and punctuation to one space (tokens
// keep letters, digits, bytes >= 0x80 and `_ - . : / + = < >`), trims '.', ':' and '-' from
// token edges, and replaces within a token:
//   - dates (2024-05-01, 05/01/2024) and clock times (10:42, 10:42:07) → the whole token "<time>"
//   - base64-like blobs (>= 20 chars of [A-Za-z0-9+/=_-] mixing upper, lower and digits) → "<id>"
//   and, in each part of a token split at '/', '=' and ':':
//   - provider ids: call_…, toolu_…, chatcmpl-…, msg_…, resp_…, req_…, run_…, thread_…,
//     asst_…, file-…, fc_…, item_… with >= 6 characters after the prefix → "<id>"
//   - uuids and hex strings: >= 16 hex digits (hyphens ignored) with a digit among them → "<id>"
//   - random-looking tokens: >= 16 letters/digits in a row with >= 2 of each → "<id>"
//   - long numbers (>= 9 digits in a row: epoch times, ids, phone numbers) → "<num>"
// Short numbers stay: "step 3" and "step 4" are different requests.
// Idempotent: normalizing normalized text changes nothing.
std::string normalize_for_fingerprint(std::string_view text);

// 64-bit hash of a byte string (FNV-1a, then a splitmix64 finalizer so every output bit
// depends on every input byte, which SimHash needs: it reads each bit as a vote).
uint64_t hash64(std::string_view bytes);

// SimHash over word 3-gram shingles of normalized text (tokens separated by spaces); a text
// of fewer than three words is one shingle. 0 for an empty text.
uint64_t simhash64(std::string_view normalized);

// Number of differing bits.
int hamming(uint64_t a, uint64_t b);

// simhash64(normalize_for_fingerprint(text)): what to pass as `previous_turn` below, computed
// from the text of the previous assistant turn (its message and tool calls).
uint64_t turn_fingerprint(std::string_view assistant_turn_text);

// The fingerprint of one request. `new_content`: the pieces the request adds, raw or already
// normalized (each is normalized here). `previous_turn`: turn_fingerprint of the previous
// assistant turn, 0 when there is none.
// The even bits come from the content's SimHash and the odd bits from `previous_turn`, so the
// Hamming distance of two fingerprints adds the distance of their contents (on 32 bits) to
// that of their previous turns (on 32 bits): the same "continue" after two different answers
// is about 16 bits away, far past any sensible threshold. 0 when both parts are empty
// (nothing to compare; the repetition detector ignores 0).
uint64_t request_fingerprint(const std::vector<std::string_view>& new_content, uint64_t previous_turn);

}  // namespace ab::loops
