#pragma once
// Syntax-check shim only (tests/cuda_syntax_check.sh): the few CUDA runtime names that
// LibTorch 1.13's c10/cuda headers mention, so that trainer code built only with a CUDA
// LibTorch can be type-checked against those headers on a machine without CUDA. Never linked.
typedef struct CUstream_st* cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorNotReady = 600 };
typedef int cudaMemcpyKind;
cudaError_t cudaGetLastError(void);
const char* cudaGetErrorString(cudaError_t);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaStreamQuery(cudaStream_t);
cudaError_t cudaMemcpyAsync(void*, const void*, unsigned long, cudaMemcpyKind, cudaStream_t);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaStreamGetPriority(cudaStream_t, int*);
cudaError_t cudaDeviceGetStreamPriorityRange(int*, int*);
