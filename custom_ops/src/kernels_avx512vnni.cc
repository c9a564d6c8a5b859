// AVX-512 + VNNI kernels: kernels_avx512.cc compiled again with -mavx512vnni, its integer
// dot products on vpdpbusd (int8) and vpdpwssd (int16); every float kernel is the same code
// as the "avx512" table's. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma;
// everything here has internal linkage, and only waveopt_kernels_avx512vnni() is visible.
#define WAVEOPT_AVX512_VNNI 1
#include "kernels_avx512.cc"
