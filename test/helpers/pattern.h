/* The seeded memory pattern shared by the test processes that are moved (memhog, ticker). */
#ifndef TEST_HELPERS_PATTERN_H
#define TEST_HELPERS_PATTERN_H

#include <stdint.h>

/* splitmix64: a cheap, well-mixed value per word, so a moved or stale page cannot match. */
static inline uint64_t pattern(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Order-sensitive checksum step over the words. */
static inline uint64_t fold(uint64_t sum, uint64_t w)
{
    sum = (sum ^ w) * 0x100000001b3ULL;
    return sum ^ (sum >> 32);
}

#endif
