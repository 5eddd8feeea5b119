// Fingerprints: normalization erases ids, timestamps, case and spacing; SimHash keeps
// near-identical texts a few bits apart and different texts far apart; the previous
// assistant turn keeps "continue" after different answers from looking like a repeat.
#include <gtest/gtest.h>

#include <string>

#include "loops/fingerprint.h"

using namespace ab::loops;

namespace {

// A tool result of realistic length (~300 words), with one slot that varies.
std::string long_tool_output(const std::string& slot) {
  std::string text = "Traceback (most recent call last): the build failed while compiling module ";
  text += slot;
  for (int i = 0; i < 30; ++i)
    text += " error in file src/component_" + std::to_string(i) +
            ".cpp line " + std::to_string(i * 7) + " expected semicolon before closing brace";
  return text;
}

}  // namespace

TEST(Normalize, LowerCasesAndCollapsesWhitespaceAndPunctuation) {
  EXPECT_EQ(normalize_for_fingerprint("  Hello,\n\tWORLD!!  again  "), "hello world again");
  EXPECT_EQ(normalize_for_fingerprint("{\"path\": \"src/main.cpp\"}"), "path src/main.cpp");
  EXPECT_EQ(normalize_for_fingerprint("The end."), "the end");
  EXPECT_EQ(normalize_for_fingerprint(""), "");
}

TEST(Normalize, ReplacesProviderIdsUuidsAndBlobs) {
  EXPECT_EQ(normalize_for_fingerprint("tool_call_id call_a8Xk29LmQpZ0rT5vW3yB7nC1"), "tool_call_id <id>");
  EXPECT_EQ(normalize_for_fingerprint("toolu_01A09q90qw90lq917835lq9 done"), "<id> done");
  EXPECT_EQ(normalize_for_fingerprint("id chatcmpl-9x8y7z6w5v"), "id <id>");
  EXPECT_EQ(normalize_for_fingerprint("request 123e4567-e89b-12d3-a456-426614174000 failed"), "request <id> failed");
  EXPECT_EQ(normalize_for_fingerprint("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"), "sha <id>");
  EXPECT_EQ(normalize_for_fingerprint("image iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB+/9kTz== end"), "image <id> end");
  EXPECT_EQ(normalize_for_fingerprint("token=k3j4h5g6f7d8s9a0q1w2"), "token=<id>");
}

TEST(Normalize, ReplacesTimestampsAndLongNumbersButKeepsSmallNumbers) {
  EXPECT_EQ(normalize_for_fingerprint("at 2024-05-01T10:42:07.123Z the job ran"), "at <time> the job ran");
  EXPECT_EQ(normalize_for_fingerprint("on 05/01/2024 at 10:42"), "on <time> at <time>");
  EXPECT_EQ(normalize_for_fingerprint("epoch 1714559000123"), "epoch <num>");
  EXPECT_EQ(normalize_for_fingerprint("step 3 of 10"), "step 3 of 10");
  // An address with a port is not a clock time.
  EXPECT_EQ(normalize_for_fingerprint("connect 127.0.0.1:8080"), "connect 127.0.0.1:8080");
}

TEST(Normalize, RetriesThatDifferOnlyInIdsAndTimesNormalizeEqual) {
  const std::string a = "Tool call_AbC123xYz789QwE456 failed at 2024-05-01 10:00:01: File   not found (req 123e4567-e89b-12d3-a456-426614174000)";
  const std::string b = "tool CALL_zzz999yyy888xxx777 failed at 2024-06-30 23:59:59: file not found\n(req 00000000-1111-2222-3333-444444444444)";
  EXPECT_EQ(normalize_for_fingerprint(a), normalize_for_fingerprint(b));
}

TEST(Normalize, IsIdempotent) {
  for (const char* text : {"Call call_a8Xk29LmQpZ0rT5vW3yB7nC1 at 2024-05-01T10:42:07Z epoch 1714559000",
                           "  plain   words, and punctuation!  ", "path=/tmp/x-1/y.txt key: value"}) {
    const std::string once = normalize_for_fingerprint(text);
    EXPECT_EQ(normalize_for_fingerprint(once), once) << text;
  }
}

TEST(SimHash, IdenticalTextsIdenticalAndEmptyIsZero) {
  const std::string t = normalize_for_fingerprint(long_tool_output("alpha"));
  EXPECT_EQ(simhash64(t), simhash64(t));
  EXPECT_NE(simhash64(t), 0u);
  EXPECT_EQ(simhash64(""), 0u);
}

TEST(SimHash, OneWordChangedInALongTextIsANearDuplicate) {
  const uint64_t a = simhash64(normalize_for_fingerprint(long_tool_output("alpha")));
  const uint64_t b = simhash64(normalize_for_fingerprint(long_tool_output("beta")));
  EXPECT_NE(a, b);
  EXPECT_LE(hamming(a, b), 3);  // the policy's default threshold
}

TEST(SimHash, DifferentTextsAreFarApart) {
  const uint64_t a = simhash64(normalize_for_fingerprint(long_tool_output("alpha")));
  const uint64_t c = simhash64(normalize_for_fingerprint(
      "Please summarize the quarterly report and list the three largest expenses with their owners"));
  EXPECT_GT(hamming(a, c), 12);
  EXPECT_GT(hamming(simhash64("continue"), simhash64("stop")), 12);
}

TEST(Hamming, CountsDifferingBits) {
  EXPECT_EQ(hamming(0, 0), 0);
  EXPECT_EQ(hamming(0b1011, 0b0001), 2);
  EXPECT_EQ(hamming(~uint64_t{0}, 0), 64);
}

TEST(Hash64, SpreadsShortInputsOverAllBits) {
  // SimHash reads every bit as a vote: a hash whose high bits barely move would bias it.
  EXPECT_GT(hamming(hash64("a"), hash64("b")), 16);
  EXPECT_GT(hamming(hash64("ab"), hash64("ba")), 16);
  EXPECT_EQ(hash64("same"), hash64("same"));
}

TEST(RequestFingerprint, SameContentAfterSameAnswerIsIdentical) {
  const uint64_t prev = turn_fingerprint("I will read the file config.yaml now.");
  const uint64_t a = request_fingerprint({"error: file config.yaml not found (call_a8Xk29LmQpZ0rT5vW3yB7nC1)"}, prev);
  const uint64_t b = request_fingerprint({"Error: file config.yaml not found (call_Zz91Yy82Xx73Ww64Vv55Uu46)"}, prev);
  EXPECT_NE(a, 0u);
  EXPECT_EQ(a, b);
}

TEST(RequestFingerprint, ContinueAfterDifferentAnswersIsNotANearDuplicate) {
  const uint64_t after_first = request_fingerprint({"continue"}, turn_fingerprint("Chapter one: the ship left the harbour at dawn."));
  const uint64_t after_second = request_fingerprint({"continue"}, turn_fingerprint("Chapter two: a storm rose over the northern sea."));
  EXPECT_GT(hamming(after_first, after_second), 3);
}

TEST(RequestFingerprint, PiecesAreNormalizedAndNothingGivesZero) {
  EXPECT_EQ(request_fingerprint({"  Read   FILE a.txt "}, 0), request_fingerprint({"read file a.txt"}, 0));
  EXPECT_EQ(request_fingerprint({}, 0), 0u);
  EXPECT_EQ(request_fingerprint({"  ", "!!"}, 0), 0u);
}
