//go:build !noasm

#include "textflag.h"

// AVX2 + FMA + F16C kernels; their Go declarations and doc are in
// dispatch_amd64.go, their reference loops in kernels_generic.go.
//
// Register use: Y0-Y3 accumulators, Y4-Y13 temporaries, Y14-Y15 constants;
// SI the weights (or a), DI x (or b), CX the element or block count.

// REDUCE sums the four accumulators Y0-Y3 into the low lane of X0.
#define REDUCE \
	VADDPS       Y1, Y0, Y0 \
	VADDPS       Y3, Y2, Y2 \
	VADDPS       Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VMOVHLPS     X0, X0, X1 \
	VADDPS       X1, X0, X0 \
	VMOVSHDUP    X0, X1     \
	VADDSS       X1, X0, X0

#define ZERO4 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3

// func dotAVX2(a, b []float32) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-52
	MOVQ a_base+0(FP), SI
	MOVQ b_base+24(FP), DI
	MOVQ a_len+8(FP), CX
	ZERO4

dot32:
	CMPQ        CX, $32
	JLT         dot8
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         dot32

dot8:
	CMPQ        CX, $8
	JLT         dotreduce
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         dot8

dotreduce:
	REDUCE

dot1:
	TESTQ       CX, CX
	JEQ         dotdone
	VMOVSS      (SI), X4
	VFMADD231SS (DI), X4, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         dot1

dotdone:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotF32AVX2(row []byte, x []float32) float32
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-52
	MOVQ row_base+0(FP), SI
	MOVQ x_base+24(FP), DI
	MOVQ x_len+32(FP), CX
	ZERO4

f32dot32:
	CMPQ        CX, $32
	JLT         f32dot8
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         f32dot32

f32dot8:
	CMPQ        CX, $8
	JLT         f32reduce
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         f32dot8

f32reduce:
	REDUCE

f32dot1:
	TESTQ       CX, CX
	JEQ         f32done
	VMOVSS      (SI), X4
	VFMADD231SS (DI), X4, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         f32dot1

f32done:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotF16AVX2(row []byte, x []float32) float32
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-52
	MOVQ row_base+0(FP), SI
	MOVQ x_base+24(FP), DI
	MOVQ x_len+32(FP), CX
	ZERO4

f16dot32:
	CMPQ        CX, $32
	JLT         f16dot8
	VCVTPH2PS   (SI), Y4
	VCVTPH2PS   16(SI), Y5
	VCVTPH2PS   32(SI), Y6
	VCVTPH2PS   48(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $64, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         f16dot32

f16dot8:
	CMPQ        CX, $8
	JLT         f16reduce
	VCVTPH2PS   (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $16, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         f16dot8

f16reduce:
	REDUCE

f16dot1:
	TESTQ       CX, CX
	JEQ         f16done
	MOVWLZX     (SI), AX
	VMOVD       AX, X4
	VCVTPH2PS   X4, X4
	VFMADD231SS (DI), X4, X0
	ADDQ        $2, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         f16dot1

f16done:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotBF16AVX2(row []byte, x []float32) float32
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-52
	MOVQ row_base+0(FP), SI
	MOVQ x_base+24(FP), DI
	MOVQ x_len+32(FP), CX
	ZERO4

bf16dot32:
	CMPQ        CX, $32
	JLT         bf16dot8
	VPMOVZXWD   (SI), Y4
	VPMOVZXWD   16(SI), Y5
	VPMOVZXWD   32(SI), Y6
	VPMOVZXWD   48(SI), Y7
	VPSLLD      $16, Y4, Y4
	VPSLLD      $16, Y5, Y5
	VPSLLD      $16, Y6, Y6
	VPSLLD      $16, Y7, Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $64, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         bf16dot32

bf16dot8:
	CMPQ        CX, $8
	JLT         bf16reduce
	VPMOVZXWD   (SI), Y4
	VPSLLD      $16, Y4, Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ        $16, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         bf16dot8

bf16reduce:
	REDUCE

bf16dot1:
	TESTQ       CX, CX
	JEQ         bf16done
	MOVWLZX     (SI), AX
	SHLL        $16, AX
	VMOVD       AX, X4
	VFMADD231SS (DI), X4, X0
	ADDQ        $2, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         bf16dot1

bf16done:
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotQ8_0AVX2(row []byte, x []float32) float32
//
// Per 34-byte block: broadcast the half scale d to 8 floats, widen the 32
// int8 to four vectors of 8 float32, multiply-add them with x into a block
// sum, then accumulate d * block sum. Two blocks per iteration, into
// alternate accumulators.
TEXT ·dotQ8_0AVX2(SB), NOSPLIT, $0-52
	MOVQ row_base+0(FP), SI
	MOVQ x_base+24(FP), DI
	MOVQ x_len+32(FP), CX
	SHRQ $5, CX              // blocks
	ZERO4

q8loop2:
	CMPQ        CX, $2
	JLT         q8loop1
	VPBROADCASTW (SI), X12
	VPBROADCASTW 34(SI), X13
	VCVTPH2PS   X12, Y12
	VCVTPH2PS   X13, Y13
	VPMOVSXBD   2(SI), Y4
	VPMOVSXBD   10(SI), Y5
	VPMOVSXBD   18(SI), Y6
	VPMOVSXBD   26(SI), Y7
	VPMOVSXBD   36(SI), Y8
	VPMOVSXBD   44(SI), Y9
	VPMOVSXBD   52(SI), Y10
	VPMOVSXBD   60(SI), Y11
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y6, Y6
	VCVTDQ2PS   Y7, Y7
	VCVTDQ2PS   Y8, Y8
	VCVTDQ2PS   Y9, Y9
	VCVTDQ2PS   Y10, Y10
	VCVTDQ2PS   Y11, Y11
	VMULPS      (DI), Y4, Y4
	VMULPS      32(DI), Y5, Y5
	VMULPS      128(DI), Y8, Y8
	VMULPS      160(DI), Y9, Y9
	VFMADD231PS 64(DI), Y6, Y4
	VFMADD231PS 96(DI), Y7, Y5
	VFMADD231PS 192(DI), Y10, Y8
	VFMADD231PS 224(DI), Y11, Y9
	VADDPS      Y5, Y4, Y4
	VADDPS      Y9, Y8, Y8
	VFMADD231PS Y4, Y12, Y0
	VFMADD231PS Y8, Y13, Y1
	ADDQ        $68, SI
	ADDQ        $256, DI
	SUBQ        $2, CX
	JMP         q8loop2

q8loop1:
	TESTQ       CX, CX
	JEQ         q8done
	VPBROADCASTW (SI), X12
	VCVTPH2PS   X12, Y12
	VPMOVSXBD   2(SI), Y4
	VPMOVSXBD   10(SI), Y5
	VPMOVSXBD   18(SI), Y6
	VPMOVSXBD   26(SI), Y7
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y6, Y6
	VCVTDQ2PS   Y7, Y7
	VMULPS      (DI), Y4, Y4
	VMULPS      32(DI), Y5, Y5
	VFMADD231PS 64(DI), Y6, Y4
	VFMADD231PS 96(DI), Y7, Y5
	VADDPS      Y5, Y4, Y4
	VFMADD231PS Y4, Y12, Y2

q8done:
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func dotQ4_0AVX2(row []byte, x []float32) float32
//
// Per 18-byte block: zero-extend the 16 quant bytes to two vectors of 8
// int32; the low nibbles are elements 0-15, the high nibbles elements
// 16-31; subtract 8, convert, multiply-add with x, and accumulate
// d * block sum.
TEXT ·dotQ4_0AVX2(SB), NOSPLIT, $0-52
	MOVQ row_base+0(FP), SI
	MOVQ x_base+24(FP), DI
	MOVQ x_len+32(FP), CX
	SHRQ $5, CX              // blocks
	ZERO4
	MOVL         $15, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15    // nibble mask
	MOVL         $8, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14    // offset 8

q4loop:
	TESTQ       CX, CX
	JEQ         q4done
	VPBROADCASTW (SI), X12
	VCVTPH2PS   X12, Y12
	VPMOVZXBD   2(SI), Y4    // bytes 0-7
	VPMOVZXBD   10(SI), Y5   // bytes 8-15
	VPSRLD      $4, Y4, Y6   // elements 16-23
	VPSRLD      $4, Y5, Y7   // elements 24-31
	VPAND       Y15, Y4, Y4  // elements 0-7
	VPAND       Y15, Y5, Y5  // elements 8-15
	VPSUBD      Y14, Y4, Y4
	VPSUBD      Y14, Y5, Y5
	VPSUBD      Y14, Y6, Y6
	VPSUBD      Y14, Y7, Y7
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y6, Y6
	VCVTDQ2PS   Y7, Y7
	VMULPS      (DI), Y4, Y4
	VMULPS      32(DI), Y5, Y5
	VFMADD231PS 64(DI), Y6, Y4
	VFMADD231PS 96(DI), Y7, Y5
	VADDPS      Y5, Y4, Y4
	VFMADD231PS Y4, Y12, Y0
	ADDQ        $18, SI
	ADDQ        $128, DI
	DECQ        CX
	JMP         q4loop

q4done:
	REDUCE
	VZEROUPPER
	MOVSS X0, ret+48(FP)
	RET

// func axpyAVX2(alpha float32, x, y []float32)
TEXT ·axpyAVX2(SB), NOSPLIT, $0-56
	VBROADCASTSS alpha+0(FP), Y15
	MOVQ x_base+8(FP), SI
	MOVQ y_base+32(FP), DI
	MOVQ x_len+16(FP), CX

axpy32:
	CMPQ        CX, $32
	JLT         axpy8
	VMOVUPS     (DI), Y0
	VMOVUPS     32(DI), Y1
	VMOVUPS     64(DI), Y2
	VMOVUPS     96(DI), Y3
	VFMADD231PS (SI), Y15, Y0
	VFMADD231PS 32(SI), Y15, Y1
	VFMADD231PS 64(SI), Y15, Y2
	VFMADD231PS 96(SI), Y15, Y3
	VMOVUPS     Y0, (DI)
	VMOVUPS     Y1, 32(DI)
	VMOVUPS     Y2, 64(DI)
	VMOVUPS     Y3, 96(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $32, CX
	JMP         axpy32

axpy8:
	CMPQ        CX, $8
	JLT         axpy1
	VMOVUPS     (DI), Y0
	VFMADD231PS (SI), Y15, Y0
	VMOVUPS     Y0, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JMP         axpy8

axpy1:
	TESTQ       CX, CX
	JEQ         axpydone
	VMOVSS      (DI), X0
	VFMADD231SS (SI), X15, X0
	VMOVSS      X0, (DI)
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JMP         axpy1

axpydone:
	VZEROUPPER
	RET

// func dequantF16AVX2(dst []float32, row []byte)
//
// len(dst) is a multiple of 8.
TEXT ·dequantF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ row_base+24(FP), SI
	SHRQ $3, CX

df16loop:
	TESTQ     CX, CX
	JEQ       df16done
	VCVTPH2PS (SI), Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JMP       df16loop

df16done:
	VZEROUPPER
	RET

// func dequantBF16AVX2(dst []float32, row []byte)
//
// len(dst) is a multiple of 8.
TEXT ·dequantBF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ row_base+24(FP), SI
	SHRQ $3, CX

dbf16loop:
	TESTQ     CX, CX
	JEQ       dbf16done
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JMP       dbf16loop

dbf16done:
	VZEROUPPER
	RET

// func dequantQ8_0AVX2(dst []float32, row []byte)
TEXT ·dequantQ8_0AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ row_base+24(FP), SI
	SHRQ $5, CX

dq8loop:
	TESTQ        CX, CX
	JEQ          dq8done
	VPBROADCASTW (SI), X12
	VCVTPH2PS    X12, Y12
	VPMOVSXBD    2(SI), Y4
	VPMOVSXBD    10(SI), Y5
	VPMOVSXBD    18(SI), Y6
	VPMOVSXBD    26(SI), Y7
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VMULPS       Y12, Y4, Y4
	VMULPS       Y12, Y5, Y5
	VMULPS       Y12, Y6, Y6
	VMULPS       Y12, Y7, Y7
	VMOVUPS      Y4, (DI)
	VMOVUPS      Y5, 32(DI)
	VMOVUPS      Y6, 64(DI)
	VMOVUPS      Y7, 96(DI)
	ADDQ         $34, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          dq8loop

dq8done:
	VZEROUPPER
	RET

// func dequantQ4_0AVX2(dst []float32, row []byte)
TEXT ·dequantQ4_0AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ row_base+24(FP), SI
	SHRQ $5, CX
	MOVL         $15, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	MOVL         $8, AX
	VMOVD        AX, X14
	VPBROADCASTD X14, Y14

dq4loop:
	TESTQ        CX, CX
	JEQ          dq4done
	VPBROADCASTW (SI), X12
	VCVTPH2PS    X12, Y12
	VPMOVZXBD    2(SI), Y4
	VPMOVZXBD    10(SI), Y5
	VPSRLD       $4, Y4, Y6
	VPSRLD       $4, Y5, Y7
	VPAND        Y15, Y4, Y4
	VPAND        Y15, Y5, Y5
	VPSUBD       Y14, Y4, Y4
	VPSUBD       Y14, Y5, Y5
	VPSUBD       Y14, Y6, Y6
	VPSUBD       Y14, Y7, Y7
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y6, Y6
	VCVTDQ2PS    Y7, Y7
	VMULPS       Y12, Y4, Y4
	VMULPS       Y12, Y5, Y5
	VMULPS       Y12, Y6, Y6
	VMULPS       Y12, Y7, Y7
	VMOVUPS      Y4, (DI)
	VMOVUPS      Y5, 32(DI)
	VMOVUPS      Y6, 64(DI)
	VMOVUPS      Y7, 96(DI)
	ADDQ         $18, SI
	ADDQ         $128, DI
	DECQ         CX
	JMP          dq4loop

dq4done:
	VZEROUPPER
	RET
