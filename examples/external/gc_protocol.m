function gc = gc_protocol()
%GC_PROTOCOL gradcheck's external-layer protocol, version 1, for MATLAB and GNU Octave clients.
%
%   gc = gc_protocol() opens the process's standard input and output and returns a struct of
%   functions that speak the protocol of docs/external-protocol.md with the binary array
%   encoding (raw little-endian float64). Copy this file next to your layer:
%
%     ok = gc.handshake()         once, at start-up (false: gradcheck speaks another version)
%     msg = gc.read()             the next request; msg.verb is '' at the end of input
%     gc.reply(fields, arrays)    an 'ok' reply: fields is a cell of field lines,
%                                 {'output_shape 3 4 6 6'}; arrays is a cell with one row
%                                 {name, dims, values} per array
%     gc.fail(text)               an 'error' reply: gradcheck shows text, the client stays ready
%
%   A request msg has: verb ('build', 'forward', 'backward' or 'quit'); fields, a struct of the
%   field lines' text (msg.fields.seed is '1234567', msg.fields.input_shape is '3 2 6 6');
%   options, a struct of the build request's 'option NAME VALUE' lines (text); arrays, a struct
%   of the arrays indexed as the protocol writes them, x(n, c, i, j) being x[n][c][i][j]; and
%   dims, a struct of each array's shape as sent (x is N-by-C-by-H-by-W: dims.x = [N C H W]).
%   A reply's values are indexed the same way and are written with the dims given.
%
%   Why /dev/stdin and /dev/stdout, not file ids 0 and 1: MATLAB's file functions take the ids
%   that fopen returns, plus 1 and 2 for text output; it has no documented way to fread file
%   id 0, and its id 1 is the command window's output. A file opened by name is an ordinary
%   file id in both MATLAB and Octave, on which fgetl, fread and fwrite with 'ieee-le' behave
%   alike. POSIX only (Linux, macOS), as gradcheck's external layer is. Lines are read with
%   fread, a byte at a time, not fgetl: Octave's fgetl returns a line only once the byte after
%   its newline has arrived, and on a pipe that byte is the start of gradcheck's next request,
%   sent only after our reply.
%
%   Only the subset of the language that MATLAB and Octave share is used here: no Octave-only
%   syntax (comments with the hash sign, !=, +=, ++, endfunction, double-quoted strings).

in = fopen('/dev/stdin', 'r');
out = fopen('/dev/stdout', 'w');
if in < 0 || out < 0
    error('gc_protocol:streams', 'cannot open /dev/stdin and /dev/stdout');
end
gc.handshake = @() handshake(in, out);
gc.read = @() read_message(in);
gc.reply = @(fields, arrays) reply(out, fields, arrays);
gc.fail = @(text) fail(out, text);
end


function ok = handshake(in, out)
line = read_line(in);
ok = ischar(line) && strcmp(strtrim(line), 'gradcheck-external 1');
if ok
    fprintf(out, 'gradcheck-external 1 binary\n');
    flush(out);
end
end


function msg = read_message(in)
msg = struct('verb', '', 'fields', struct(), 'options', struct(), 'arrays', struct(), ...
             'dims', struct());
line = read_line(in);
if ~ischar(line)
    return;  % end of input: gradcheck has gone, and the client ends too
end
msg.verb = strtrim(line);
if strcmp(msg.verb, 'quit')
    return;
end
while true
    line = read_line(in);
    if ~ischar(line)
        msg.verb = '';
        return;
    end
    line = strtrim(line);
    if strcmp(line, 'end')
        return;
    end
    [name, rest] = strtok(line);
    rest = strtrim(rest);
    if strcmp(name, 'array')
        [array_name, dims, values, complete] = read_array(in, rest);
        if ~complete
            msg.verb = '';
            return;
        end
        msg.dims.(array_name) = dims;
        msg.arrays.(array_name) = from_row_major(values, dims);
    elseif strcmp(name, 'option')
        [option_name, value] = strtok(rest);
        msg.options.(option_name) = strtrim(value);
    elseif isvarname(name)
        msg.fields.(name) = rest;
    end  % a field this client cannot name is one it does not know: the protocol says ignore it
end
end


function line = read_line(in)
% The next line without its newline, or -1 at the end of input. Header lines are short, so
% reading them a byte at a time costs little next to the arrays.
line = -1;
bytes = zeros(1, 80);
count = 0;
while true
    byte = fread(in, 1, 'uint8');
    if isempty(byte)
        return;
    end
    if byte == 10
        break;
    end
    count = count + 1;
    bytes(count) = byte;
end
line = char(bytes(1:count));
if count > 0 && line(end) == char(13)
    line = line(1:end - 1);
end
end


function [name, dims, values, complete] = read_array(in, header)
% header is 'NAME NDIM D1 .. Dn'; the values follow it as raw little-endian float64.
[name, rest] = strtok(header);
numbers = sscanf(rest, '%d');
dims = reshape(numbers(2:end), 1, []);
count = prod(dims);
[values, read] = fread(in, count, 'double', 0, 'ieee-le');
complete = read == count;
end


function array = from_row_major(values, dims)
% The protocol's last index varies fastest; MATLAB's first does. Reading the values into the
% reversed shape and reversing the axes gives array(i1, .., in) = value[i1][..][in].
if numel(dims) <= 1
    array = values(:);
else
    array = permute(reshape(values, fliplr(dims)), numel(dims):-1:1);
end
end


function values = to_row_major(array, dims)
if numel(array) ~= prod(dims)
    error('gc_protocol:shape', 'an array of %d values cannot have shape [%s]', ...
          numel(array), num2str(dims));
end
if numel(dims) <= 1
    values = array(:);
else
    % permute takes the axes by position, so trailing singleton axes (which MATLAB drops
    % from size) are still reversed correctly.
    values = reshape(permute(reshape(array, dims), numel(dims):-1:1), [], 1);
end
end


function reply(out, fields, arrays)
% Every array is converted before the first byte is written: a failure in the conversion
% must not leave half a reply on the stream.
payload = cell(size(arrays, 1), 1);
for k = 1:size(arrays, 1)
    payload{k} = to_row_major(arrays{k, 3}, arrays{k, 2});
end
fprintf(out, 'ok\n');
for k = 1:numel(fields)
    fprintf(out, '%s\n', fields{k});
end
for k = 1:size(arrays, 1)
    dims = arrays{k, 2};
    fprintf(out, 'array %s %d%s\n', arrays{k, 1}, numel(dims), sprintf(' %d', dims));
    fwrite(out, payload{k}, 'double', 0, 'ieee-le');
end
fprintf(out, 'end\n');
flush(out);
end


function fail(out, text)
% One line: newlines in a message would end the reply early.
text = strrep(strrep(text, char(13), ' '), char(10), ' ');
fprintf(out, 'error %s\n', text);
flush(out);
end


function flush(out)
% MATLAB flushes a file opened with 'w' after every write ('W' would not) and has no fflush;
% Octave buffers and must be told.
if exist('OCTAVE_VERSION', 'builtin')
    fflush(out);
end
end
