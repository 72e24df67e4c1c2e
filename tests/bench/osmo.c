/*
 * The libosmocore side of the security rows of tests/bench/peers.sh: Milenage authentication vectors
 * per second (osmo_auth_gen_vec, one core) and the GEA4 keystream in MB/s (gprs_cipher_run, KASUMI in
 * KGCORE's chained mode, the nearest thing libosmocore has to UEA1 f8 over one message).
 *
 * Built by tests/bench/peers.sh against Debian's libosmocore-dev:
 *   cc -O2 -o osmo tests/bench/osmo.c $(pkg-config --cflags --libs libosmogsm libosmocore)
 * Usage: osmo ROUNDS SECONDS_PER_ROUND MESSAGE_OCTETS
 * Prints one JSON object per figure, the best round of ROUNDS (the machine is shared: the best round is
 * the one least disturbed by other work, and the Rust side is measured the same way).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <osmocom/crypt/auth.h>
#include <osmocom/crypt/gprs_cipher.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Vectors per second over one round of about `seconds`. */
static double milenage_round(double seconds)
{
	struct osmo_sub_auth_data aud;
	struct osmo_auth_vector vec;
	uint8_t rand[16];
	uint64_t n = 0;
	double start, elapsed;

	memset(&aud, 0, sizeof(aud));
	aud.type = OSMO_AUTH_TYPE_UMTS;
	aud.algo = OSMO_AUTH_ALG_MILENAGE;
	memset(aud.u.umts.k, 0x46, 16);
	memset(aud.u.umts.opc, 0xcd, 16);
	aud.u.umts.opc_is_op = 0;
	aud.u.umts.amf[0] = 0x80;
	aud.u.umts.sqn = 0x22;
	aud.u.umts.ind_bitlen = 5;
	memset(rand, 0x23, sizeof(rand));

	start = now_s();
	do {
		for (int i = 0; i < 4096; i++) {
			rand[0]++;
			if (osmo_auth_gen_vec(&vec, &aud, rand) != 0) {
				fprintf(stderr, "osmo: osmo_auth_gen_vec failed; is libosmogsm built with Milenage?\n");
				exit(1);
			}
		}
		n += 4096;
		elapsed = now_s() - start;
	} while (elapsed < seconds);
	return n / elapsed;
}

/* Keystream MB/s (10^6 octets) over one round. */
static double gea4_round(double seconds, uint16_t len)
{
	uint8_t kc[16];
	uint8_t *out = malloc(len);
	uint64_t octets = 0;
	uint32_t iv = 1;
	double start, elapsed;

	if (!out) {
		fprintf(stderr, "osmo: out of memory for a %u-octet message\n", len);
		exit(1);
	}
	memset(kc, 9, sizeof(kc));
	start = now_s();
	do {
		for (int i = 0; i < 16; i++) {
			if (gprs_cipher_run(out, len, GPRS_ALGO_GEA4, kc, iv++, GPRS_CIPH_MS2SGSN) != 0) {
				fprintf(stderr, "osmo: gprs_cipher_run(GEA4) failed; libosmogsm has no GEA4\n");
				exit(1);
			}
		}
		octets += 16u * len;
		elapsed = now_s() - start;
	} while (elapsed < seconds);
	free(out);
	return octets / elapsed / 1e6;
}

int main(int argc, char **argv)
{
	int rounds;
	double seconds, best_m = 0, best_g = 0;
	long len;

	if (argc != 4 || (rounds = atoi(argv[1])) < 1 || (seconds = atof(argv[2])) <= 0 ||
	    (len = atol(argv[3])) < 8 || len > 65535) {
		fprintf(stderr, "usage: osmo ROUNDS SECONDS_PER_ROUND MESSAGE_OCTETS (8..65535), e.g. osmo 5 1 16384\n");
		return 2;
	}
	for (int r = 0; r < rounds; r++) {
		double m = milenage_round(seconds), g = gea4_round(seconds, (uint16_t)len);
		if (m > best_m)
			best_m = m;
		if (g > best_g)
			best_g = g;
	}
	printf("{\"figure\":\"milenage_vectors_per_s\",\"value\":%.0f}\n", best_m);
	printf("{\"figure\":\"gea4_keystream_mb_per_s\",\"value\":%.2f,\"octets\":%ld}\n", best_g, len);
	return 0;
}
