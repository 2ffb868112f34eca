"""Every threshold the diagnosis uses, in one place, with where it comes from.

Keys of the sources: CS = CS231n notes, KR = Karpathy's "A Recipe for Training Neural Networks",
TDC = TheDeepChecker, AT = AUTOTRAINER, DD = DeepDiagnosis, UM = UMLAUT, NL = NeuraLint (see
README "Diagnose" and research/diagnostics-anchors.md). *measured* marks numbers calibrated on
this repository's configs.
"""

# --- static lints -------------------------------------------------------------------------
# lr x weight_decay: the SGD decay factor 1 - lr*lambda is <= 0 from 1 on (every weight flips sign
# each step: exact algebra); 0.1 is TDC's upper update-ratio band 10^-1, since decay alone adds
# lr*lambda to the update ratio.
DECAY_FLIP = 1.0
DECAY_WARN = 0.1
# UM's learning-rate band; optimizer-agnostic there, hence info only here (B5 decides).
LR_HIGH, LR_LOW = 0.01, 1e-7
# UM HighDropoutError.
DROPOUT_MAX = 0.5
# TDC pure_f_test at alpha = 0.1: F = max(v/v_ref, v_ref/v) > F_crit means a badly scaled init.
# Here v is the layer's forward gain (mean square out per unit mean square in, = fan_in x mean(W^2)
# for a dense or conv) and v_ref the closer of He's 2 and LeCun's 1.
INIT_F_CRIT = 2.70554
# A constant init: std <= 1e-8 relative to the mean (NL f004, made relative unlike TDC's absolute).
INIT_CONSTANT_RTOL = 1e-8
# Not zero-centred: |mean| > std, or more than 95% of one sign (CS2 "half positive, half negative";
# 0.95 is TDC's sign ratio). Needs >= 16 entries: below that a healthy N(0, s) draw has
# |mean| > std with probability P(|Z| > 4) = 6e-5 only from 16 on.
INIT_SIGN_SHARE = 0.95
INIT_MIN_SIZE = 16

# --- forward health -----------------------------------------------------------------------
# Spread s = median over units of std-over-batch / RMS(layer). Healthy conv pre-activations have
# s = 0.25-0.41; the R1 re-creation 7e-6, or 0 with a dead ReLU (anchors App. A1).
COLLAPSE_ERROR = 1e-6
COLLAPSE_WARN = 1e-3
# TDC dead unit: the 95th percentile of |a| over the batch < 1e-5; flag > 50% of units (warn),
# all of them (error).
DEAD_ACTIVATION = 1e-5
DEAD_SHARE_WARN = 0.5
# ... judged only on batches of >= 8 samples (a live unit is off for all of them with p = 2^-8),
# except a layer whose units are all dead.
DEAD_MIN_BATCH = 8
# Saturation: a bounded activation's local gain below sigmoid'(5)/sigmoid'(0) = 0.0266 of its
# peak (DD counts |pre-activation| > 5 as saturated), for > 50% of the samples of > 50% of units.
SATURATED_GAIN = 0.0266
SATURATED_SHARE = 0.5
# Activation scale: TDC's std band [0.5, 2] widened by sqrt(F_crit) -> [0.304, 3.29] (info);
# AT omega1 = 10 on mean |a| (warn).
SCALE_LOW, SCALE_HIGH = 0.304, 3.29
SCALE_ABNORMAL = 10.0
# Attention collapse at initialisation (``sequence.py``; Zhai et al. 2023 tie training instability
# to attention entropy collapsing): per head, the mean entropy of a query's weights over log(keys it
# sees) below 0.3, i.e. it attends to fewer than keys^0.3 keys in effect (exp(entropy): under 2 of
# 8). Scores of std s give about 1 - s^2 / (2 ln keys); *measured*: the healthy transformer block
# 0.60-0.85 at init over seeds 0-9, a head without the 1/sqrt(d) scale or with N(0, 1) weights 0.05.
ATTENTION_ENTROPY = 0.3
# Initial loss: TDC dev_ratio 1.0 (|L0 - L_exp| >= 1.0 x L_exp), i.e. L0 >= 2 x L_exp, where L_exp
# is what the same initial weights give on standard-normal inputs of the network's shape (the mean
# over INIT_LOSS_BATCHES batches, at each probe seed), not a fixed band around ln(classes): a
# default He output layer starts at 2 x ln(10) on LeNet and trains fine.
INIT_LOSS_FACTOR = 2.0
INIT_LOSS_BATCHES = 4
# Sum instead of mean reduction: loss x1.8 or more when the batch is duplicated (TDC: doubles).
REDUCTION_GROWTH = 1.8

# --- backward health ----------------------------------------------------------------------
# AT beta1 / beta3 on |g_first| / |g_last|; DD threshold_VG on mean |g|.
VANISH_RATIO = 1e-3
EXPLODE_RATIO = 70.0
VANISH_MEAN = 1e-7
# AT gamma: network-wide share of exactly-zero gradient entries.
ZERO_GRAD_SHARE = 0.7
# CS3 "~1e-3"; TDC band log10 in [-4, -1]; a step as large as the weight itself (>= 1) is an error.
UPDATE_HIGH, UPDATE_LOW, UPDATE_ERROR = 1e-1, 1e-4, 1.0
# Gradient flow per branch (``flow.py``): at a fork, the RMS of what one branch sends back over
# what a sibling sends, >= 1e3 = one branch is dead or exploding: AT's beta1 = 1e-3 (vanishing:
# |g_first| / |g_last| < 1e-3) applied between sibling paths, which start at the same tensor and
# end at the same merge, so no depth separates them.
BRANCH_RATIO = 1e3
# Gradients through time (``sequence.py``): r = |dL/dx_first step| / |dL/dx_last step| of a layer
# that carries its input through time, from the upstream gradient at the last step alone. BPTT is
# backprop through a T-layer network that shares its weights (Pascanu et al. 2013, sec. 2): the
# part of the gradient that crosses T - 1 steps is bounded by eta^(T-1), eta = |W_rec| x max|f'|,
# so it vanishes or explodes geometrically (Bengio et al. 1994). Vanishing: the factor per step
# r^(1/(T-1)) < 1/4, the bound eta of sigmoid units (max slope 1/4) with |W_rec| <= 1; judged per
# step since a gated cell at its default init keeps a constant share per step whatever T (*measured*
# 0.5-0.85 for the built-in rnn, lstm, gru and attention; a recurrence drawn N(0, 0.01^2) 0.03).
# Exploding: r > 70 over the sequence, AT's beta3 on |g_first| / |g_last| with time as the depth.
TIME_VANISH_STEP = 0.25
TIME_EXPLODE = 70.0
# TDC Overwhelming_Reg: |grad reg| / |grad data| >= 2.
REG_DOMINATES = 2.0
# Batch mixing: other samples' dL/dx at most 1e-12 of the sample's own (exact zero up to rounding).
BATCH_LEAK = 1e-12

# --- training probe -----------------------------------------------------------------------
# TDC: 16 samples; reference run: Adam 1e-3 without regularisation (KR "Adam is safe"; Adam 1e-3
# fits a 16-sample batch to R^2 >= 0.996 within 300 steps, anchors App. A2), at most 1000 steps
# (TDC: 1000 iterations); the slowest shipped configs need up to 1000 (plugin.yaml) and 490.
PROBE_BATCH = 16
REFERENCE_LR = 1e-3
REFERENCE_STEPS = 1000
CHECK_PERIOD = 10
# Overfit one batch: accuracy >= 0.95 or R^2 >= 0.95 (TDC's 5% tolerance).
FIT_ACCURACY = 0.95
FIT_R2 = 0.95
# TDC: diverging = loss / min loss >= 2 at each of 5 consecutive checks (then the run stops).
DIVERGE_FACTOR = 2.0
TREND_CHECKS = 5
# No progress: over the second half of the steps run, the best loss (above the floor the targets
# allow) falls by less than TDC's 5% of the best before it. Judged when a run ends; a run stops
# early, as stalled, once that fall is under 1% from step 50 on (5 checks, TDC's trend window).
# Healthy runs fell >= 9% at every check from step 50 (bench/diagnose_margins.py); the failing
# user runs of the scenarios 0-2.4% (R2, R3, R4).
PROGRESS_MIN = 0.05
FROZEN = 0.01
STALL_MIN_STEPS = 50
# A reference run that only yardsticks the user's failing run stops, from step 100 on, once its
# R^2 cannot reach FIT_R2 within its budget even at 3 x the rate it gained over the last half of
# the run: it is then known not to fit, all the verdict needs of it. Healthy references that went
# on to fit needed at most 2.3 x (bench/diagnose_margins.py). (Accuracy moves in jumps and is not
# extrapolated.)
PROJECT_MIN_STEPS = 100
PROJECT_SLACK = 3.0
# When the gradient check fails every run trains with the wrong gradient and the verdict already
# says "fix it first"; a yardstick reference then only tells whether a safe optimizer still fits
# despite it (R3: yes, within 390 steps over 60 seeds; R1: no), so it gets half of TDC's budget.
REFERENCE_STEPS_WRONG_GRADIENT = 500
# KR's input-independent baseline: with every input zeroed the same run must end clearly worse;
# the real input's best loss >= 0.9 x the zeroed input's means the output ignores the input.
INPUT_GAIN = 0.9
# TDC weights: mean |W| > 1e8 or doubling per check for 5 checks = diverging; > 95% of |w| < 1e-5
# = crushed; > 95% one sign (when init was balanced) = sign pathology.
WEIGHT_HUGE = 1e8
WEIGHT_TINY = 1e-5
WEIGHT_SHARE = 0.95
# Collapse: std(yhat_d)/std(y_d) < 0.05 for every output dimension (healthy 0.99-1.05; collapsed
# saturated sigmoid 0.001; unconverged but alive 0.16-0.38, anchors App. A2); "to the mean" when
# |mean yhat - mean y| < 0.1 std(y).
COLLAPSE_SPREAD = 0.05
COLLAPSE_MEAN = 0.1
