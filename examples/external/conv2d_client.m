function conv2d_client(variant)
%CONV2D_CLIENT A 2-D convolution (stride 1, zero padding) served to gradcheck over the
%external-layer protocol, version 1, by MATLAB or GNU Octave: one code base for both.
%
%   gradcheck starts it as a child process in the YAML file's folder, where this file and
%   gc_protocol.m are (see conv_octave.yaml):
%     GNU Octave:  command: [octave-cli, --quiet, --norc, --no-history, --eval, conv2d_client]
%     MATLAB:      command: [matlab, -batch, conv2d_client], timeout: 120
%   (MATLAB's start-up can take longer than the default 30 s allowed for the handshake, and
%   nothing may print to standard output before it: no startup.m that displays anything.)
%   conv2d_client('buggy') serves the buggy twin described below.
%
%   Shapes, indexed as the protocol sends them (batch N first):
%     x (N, C, H, W), W (F, C, K, K), b (F), y (N, F, H + 2P - K + 1, W + 2P - K + 1)
%   Options: filters F (required), kernel K (default 3), padding P (default 0).
%     y(n, f, i, j) = b(f) + sum over c, u, v of W(f, c, u, v) * xpad(n, c, i + u - 1, j + v - 1)
%   where xpad is x with P zeros on both sides of each spatial axis.
%
%   The buggy twin crops the padding off the input gradient one place too early, at P where
%   1-based indexing starts the unpadded rows at P + 1: the 0-based habit of C carried into
%   MATLAB. Its weight and bias gradients are right, so gradcheck must blame dL/dinput. (With
%   padding 0 the crop starts at index 0 and MATLAB stops it with an index error instead.)

if nargin < 1
    variant = 'correct';
end
if ~any(strcmp(variant, {'correct', 'buggy'}))
    error('conv2d_client:variant', 'variant must be ''correct'' or ''buggy'', got ''%s''', ...
          variant);
end
buggy = strcmp(variant, 'buggy');
gc = gc_protocol();
if ~gc.handshake()
    fprintf(2, 'conv2d_client: gradcheck speaks another protocol version than 1\n');
    return;
end
layer = struct('built', false);
while true
    msg = gc.read();
    if isempty(msg.verb) || strcmp(msg.verb, 'quit')
        return;
    end
    try
        switch msg.verb
            case 'build'
                layer = build(gc, msg);
            case 'forward'
                forward(gc, layer, msg);
            case 'backward'
                backward(gc, layer, msg, buggy);
            otherwise
                gc.fail(sprintf('unknown request ''%s''', msg.verb));
        end
    catch err
        gc.fail(['conv2d_client: ' err.message]);
    end
end
end


function layer = build(gc, msg)
shape = reshape(sscanf(msg.fields.input_shape, '%d'), 1, []);
if numel(shape) ~= 4 || shape(1) ~= 3
    error('conv2d_client:shape', ['conv2d needs a (channels, height, width) input, got ' ...
          'input_shape ''%s'''], msg.fields.input_shape);
end
layer = struct('built', true, 'C', shape(2), 'H', shape(3), 'W', shape(4), ...
               'F', option(msg, 'filters', 0), 'K', option(msg, 'kernel', 3), ...
               'P', option(msg, 'padding', 0));
if layer.F < 1 || layer.K < 1 || layer.P < 0
    error('conv2d_client:options', 'options: filters >= 1 (required), kernel >= 1, padding >= 0');
end
layer.HO = layer.H + 2 * layer.P - layer.K + 1;
layer.WO = layer.W + 2 * layer.P - layer.K + 1;
if layer.HO < 1 || layer.WO < 1
    error('conv2d_client:kernel', 'kernel %d is larger than the padded input %dx%d', ...
          layer.K, layer.H + 2 * layer.P, layer.W + 2 * layer.P);
end
% Initial values from the seed alone, by a generator of our own (Park and Miller's minimal
% standard, exact in double arithmetic), so that MATLAB and Octave start from the same weights.
state = mod(str2double(msg.fields.seed), 2147483646) + 1;
[weights, state] = normals(state, layer.F * layer.C * layer.K * layer.K);
bias = normals(state, layer.F);
weights = reshape(weights / sqrt(layer.C * layer.K * layer.K), ...
                  [layer.F, layer.C, layer.K, layer.K]);
gc.reply({sprintf('output_shape 3 %d %d %d', layer.F, layer.HO, layer.WO)}, ...
         {'W', [layer.F, layer.C, layer.K, layer.K], weights; 'b', layer.F, 0.1 * bias});
end


function forward(gc, layer, msg)
[xpad, weights, bias, batch] = inputs(layer, msg);
y = zeros(batch, layer.F, layer.HO, layer.WO);
for f = 1:layer.F
    acc = bias(f) * ones(batch, 1, layer.HO, layer.WO);
    for c = 1:layer.C
        for u = 1:layer.K
            for v = 1:layer.K
                acc = acc + weights(f, c, u, v) * ...
                      xpad(:, c, u:u + layer.HO - 1, v:v + layer.WO - 1);
            end
        end
    end
    y(:, f, :, :) = acc;
end
gc.reply({}, {'y', [batch, layer.F, layer.HO, layer.WO], y});
end


function backward(gc, layer, msg, buggy)
[xpad, weights, ~, batch] = inputs(layer, msg);
out_dims = [batch, layer.F, layer.HO, layer.WO];
if ~isfield(msg.arrays, 'grad_out') || ~isequal(msg.dims.grad_out, out_dims)
    error('conv2d_client:grad_out', 'backward needs grad_out of shape [%s]', num2str(out_dims));
end
grad_out = msg.arrays.grad_out;
grad_xpad = zeros(size(xpad));
grad_w = zeros(layer.F, layer.C, layer.K, layer.K);
grad_b = zeros(layer.F, 1);
for f = 1:layer.F
    g = grad_out(:, f, :, :);
    grad_b(f) = sum(g(:));
    for c = 1:layer.C
        for u = 1:layer.K
            for v = 1:layer.K
                rows = u:u + layer.HO - 1;
                cols = v:v + layer.WO - 1;
                window = xpad(:, c, rows, cols);
                grad_w(f, c, u, v) = sum(g(:) .* window(:));
                grad_xpad(:, c, rows, cols) = grad_xpad(:, c, rows, cols) + weights(f, c, u, v) * g;
            end
        end
    end
end
if buggy
    first = layer.P;  % BUG: a 0-based offset; the unpadded rows and columns start at P + 1
else
    first = layer.P + 1;
end
grad_x = grad_xpad(:, :, first:first + layer.H - 1, first:first + layer.W - 1);
gc.reply({}, {'grad_x', msg.dims.x, grad_x; ...
              'W', [layer.F, layer.C, layer.K, layer.K], grad_w; 'b', layer.F, grad_b});
end


function [xpad, weights, bias, batch] = inputs(layer, msg)
% The arrays of every forward and backward request, checked against the build; x comes back
% zero-padded, as both directions use it.
if ~layer.built
    error('conv2d_client:order', '%s before build', msg.verb);
end
if ~all(isfield(msg.arrays, {'x', 'W', 'b'})) || numel(msg.dims.x) ~= 4 || ...
        ~isequal(msg.dims.x(2:4), [layer.C, layer.H, layer.W])
    error('conv2d_client:inputs', '%s needs arrays x (N, %d, %d, %d), W and b', msg.verb, ...
          layer.C, layer.H, layer.W);
end
batch = msg.dims.x(1);
xpad = zeros(batch, layer.C, layer.H + 2 * layer.P, layer.W + 2 * layer.P);
xpad(:, :, layer.P + 1:layer.P + layer.H, layer.P + 1:layer.P + layer.W) = msg.arrays.x;
weights = msg.arrays.W;
bias = msg.arrays.b;
end


function value = option(msg, name, default)
value = default;
if isfield(msg.options, name)
    value = str2double(msg.options.(name));
    if isnan(value) || value ~= round(value)
        error('conv2d_client:options', 'option %s must be an integer, got ''%s''', name, ...
              msg.options.(name));
    end
end
end


function [values, state] = normals(state, count)
% count standard normal values by Box-Muller from the uniform generator below.
values = zeros(count, 1);
for k = 1:count
    [u1, state] = uniform(state);
    [u2, state] = uniform(state);
    values(k) = sqrt(-2 * log(u1)) * cos(2 * pi * u2);
end
end


function [u, state] = uniform(state)
% Park and Miller's minimal standard generator: 16807 * state stays below 2^53, so it is exact.
state = mod(16807 * state, 2147483647);
u = state / 2147483647;
end
