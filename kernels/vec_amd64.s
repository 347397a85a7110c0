//go:build !noasm

#include "textflag.h"

// Vectorized exp for Softmax and SiLUMul: expf (vec.go) on 8 lanes, with
// fused multiply-adds in the reduction and the polynomial, and 2^n applied
// as two exact halves so subnormal results round once, as expf's do.

#define SPLAT(name, v) \
	DATA name<>+0(SB)/4, $v \
	DATA name<>+4(SB)/4, $v \
	DATA name<>+8(SB)/4, $v \
	DATA name<>+12(SB)/4, $v \
	DATA name<>+16(SB)/4, $v \
	DATA name<>+20(SB)/4, $v \
	DATA name<>+24(SB)/4, $v \
	DATA name<>+28(SB)/4, $v \
	GLOBL name<>(SB), RODATA|NOPTR, $32

SPLAT(expMax, 0x42b17218)  // 88.72283905206835 = ln(MaxFloat32)
SPLAT(expMin, 0xc2cff1b4)  // -103.97207708
SPLAT(expLog2e, 0x3fb8aa3b)
SPLAT(expHalf, 0x3f000000)
SPLAT(expOne, 0x3f800000)
SPLAT(expC1, 0x3f318000)   // 0.693359375
SPLAT(expC2, 0xb95e8083)   // -2.12194440e-4
SPLAT(expP0, 0x39506967)   // 1.9875691500e-4
SPLAT(expP1, 0x3ab743ce)   // 1.3981999507e-3
SPLAT(expP2, 0x3c088908)   // 8.3334519073e-3
SPLAT(expP3, 0x3d2aa9c1)   // 4.1665795894e-2
SPLAT(expP4, 0x3e2aaaaa)   // 1.6666665459e-1
SPLAT(expP5, 0x3f000000)   // 5.0000001201e-1
SPLAT(expInf, 0x7f800000)
SPLAT(exp127, 0x0000007f)

// EXP sets Y0 to exp(Y0), lane by lane, using Y1-Y5: clamp x to
// [expMin, expMax] (min and max take x as their second operand, so a NaN
// stays NaN); n = floor(x·log2e + 1/2); r = x - n·c1 - n·c2; the
// polynomial y = p(r)·r² + r + 1; y·2^(n>>1)·2^(n - n>>1); then +Inf where
// x > expMax and 0 where x < expMin.
#define EXP \
	VCMPPS       $0x0e, expMax<>(SB), Y0, Y4 \
	VCMPPS       $0x01, expMin<>(SB), Y0, Y5 \
	VMOVUPS      expMax<>(SB), Y1 \
	VMINPS       Y0, Y1, Y1 \
	VMOVUPS      expMin<>(SB), Y2 \
	VMAXPS       Y1, Y2, Y1 \
	VMOVUPS      expHalf<>(SB), Y2 \
	VFMADD231PS  expLog2e<>(SB), Y1, Y2 \
	VROUNDPS     $1, Y2, Y2 \
	VFNMADD231PS expC1<>(SB), Y2, Y1 \
	VFNMADD231PS expC2<>(SB), Y2, Y1 \
	VMOVUPS      expP0<>(SB), Y3 \
	VFMADD213PS  expP1<>(SB), Y1, Y3 \
	VFMADD213PS  expP2<>(SB), Y1, Y3 \
	VFMADD213PS  expP3<>(SB), Y1, Y3 \
	VFMADD213PS  expP4<>(SB), Y1, Y3 \
	VFMADD213PS  expP5<>(SB), Y1, Y3 \
	VMULPS       Y1, Y1, Y0 \
	VFMADD213PS  Y1, Y0, Y3 \
	VADDPS       expOne<>(SB), Y3, Y3 \
	VCVTPS2DQ    Y2, Y2 \
	VPSRAD       $1, Y2, Y1 \
	VPSUBD       Y1, Y2, Y2 \
	VPADDD       exp127<>(SB), Y1, Y1 \
	VPADDD       exp127<>(SB), Y2, Y2 \
	VPSLLD       $23, Y1, Y1 \
	VPSLLD       $23, Y2, Y2 \
	VMULPS       Y1, Y3, Y3 \
	VMULPS       Y2, Y3, Y0 \
	VBLENDVPS    Y4, expInf<>(SB), Y0, Y0 \
	VXORPS       Y1, Y1, Y1 \
	VBLENDVPS    Y5, Y1, Y0, Y0

// func expSubAVX2(x []float32, m float32) float64
//
// x[i] = exp(x[i] - m) for len(x) rounded down to a multiple of 8; returns
// the float64 sum of the new values. A NaN gives NaN.
TEXT ·expSubAVX2(SB), NOSPLIT, $0-40
	MOVQ         x_base+0(FP), SI
	MOVQ         x_len+8(FP), CX
	SHRQ         $3, CX
	VBROADCASTSS m+24(FP), Y6
	VXORPD       Y7, Y7, Y7
	VXORPD       Y8, Y8, Y8
	TESTQ        CX, CX
	JEQ          done

loop:
	VMOVUPS      (SI), Y0
	VSUBPS       Y6, Y0, Y0
	EXP
	VMOVUPS      Y0, (SI)
	VCVTPS2PD    X0, Y1
	VEXTRACTF128 $1, Y0, X2
	VCVTPS2PD    X2, Y2
	VADDPD       Y1, Y7, Y7
	VADDPD       Y2, Y8, Y8
	ADDQ         $32, SI
	DECQ         CX
	JNZ          loop

done:
	VADDPD       Y8, Y7, Y7
	VEXTRACTF128 $1, Y7, X8
	VADDPD       X8, X7, X7
	VHADDPD      X7, X7, X7
	VZEROUPPER
	MOVSD        X7, ret+32(FP)
	RET

// func siluMulAVX2(gate, up []float32)
//
// gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for len(gate) rounded
// down to a multiple of 8.
TEXT ·siluMulAVX2(SB), NOSPLIT, $0-48
	MOVQ gate_base+0(FP), SI
	MOVQ gate_len+8(FP), CX
	MOVQ up_base+24(FP), DI
	SHRQ $3, CX
	TESTQ CX, CX
	JEQ  sdone
	VXORPS Y7, Y7, Y7

sloop:
	VMOVUPS (SI), Y6
	VSUBPS  Y6, Y7, Y0 // -g
	EXP
	VADDPS  expOne<>(SB), Y0, Y0
	VDIVPS  Y0, Y6, Y6
	VMULPS  (DI), Y6, Y6
	VMOVUPS Y6, (SI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     sloop

sdone:
	VZEROUPPER
	RET

// func maxAVX2(x []float32) float32
//
// The largest of x[:len(x)&^7], ignoring NaNs (VMAXPS keeps its second
// operand, the running maximum, when the first is NaN); -Inf if there are
// none.
TEXT ·maxAVX2(SB), NOSPLIT, $0-28
	MOVQ    x_base+0(FP), SI
	MOVQ    x_len+8(FP), CX
	SHRQ    $3, CX
	VMOVUPS expInf<>(SB), Y0
	VXORPS  Y1, Y1, Y1
	VSUBPS  Y0, Y1, Y0 // -Inf
	TESTQ   CX, CX
	JEQ     mdone

mloop:
	VMOVUPS (SI), Y1
	VMAXPS  Y0, Y1, Y0
	ADDQ    $32, SI
	DECQ    CX
	JNZ     mloop

mdone:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X0, X1, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X0, X1, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X0, X1, X0
	VZEROUPPER
	MOVSS        X0, ret+24(FP)
	RET

// func scaleAVX2(x []float32, s float32)
//
// x[i] *= s for i < len(x)&^7.
TEXT ·scaleAVX2(SB), NOSPLIT, $0-28
	MOVQ         x_base+0(FP), SI
	MOVQ         x_len+8(FP), CX
	SHRQ         $3, CX
	VBROADCASTSS s+24(FP), Y1
	TESTQ        CX, CX
	JEQ          sdone2

scloop:
	VMULPS  (SI), Y1, Y0
	VMOVUPS Y0, (SI)
	ADDQ    $32, SI
	DECQ    CX
	JNZ     scloop

sdone2:
	VZEROUPPER
	RET
