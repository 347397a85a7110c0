//go:build !noasm

#include "textflag.h"

// func toF16AVX2(dst *uint16, src *float32, n int)
//
// Converts n (a multiple of 8) floats to halves, rounding to nearest even
// (VCVTPS2PH with immediate 0), 8 at a time.
TEXT ·toF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS   (SI), Y0
	VCVTPS2PH $0, Y0, X1
	VMOVDQU   X1, (DI)
	ADDQ      $32, SI
	ADDQ      $16, DI
	DECQ      CX
	JNZ       loop

done:
	VZEROUPPER
	RET
