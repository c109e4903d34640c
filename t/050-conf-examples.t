# Every file in conf-examples/ passes nginx -t as it is, with the module
# loaded the way the quickstart loads it (modules/ under the prefix).
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use File::Basename qw(basename);
use Cwd qw(abs_path);

my $nginx = $ENV{TEST_NGINX_BINARY} || 'nginx';
my ($so) = grep { /ngx_http_ai_gateway_module\.so$/ }
           split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} || '');
plan skip_all => 'TEST_NGINX_LOAD_MODULES names no ngx_http_ai_gateway_module.so'
    unless $so;

# the provider keys some examples read from the environment (placeholders:
# nginx -t sends nothing anywhere)
$ENV{$_} //= 'sk-placeholder-for-nginx-t'
    for qw(OPENAI_API_KEY ANTHROPIC_API_KEY DATABRICKS_TOKEN);

my @confs = glob('conf-examples/*.conf');
ok(scalar @confs, 'conf-examples/ has configurations');

for my $conf (@confs) {
    # provider.conf is included by the quickstart, not a main configuration
    next if basename($conf) eq 'provider.conf';

    my $prefix = tempdir(CLEANUP => 1);
    mkdir "$prefix/logs";
    mkdir "$prefix/modules";
    symlink abs_path($so), "$prefix/modules/ngx_http_ai_gateway_module.so";

    my $out = `$nginx -t -p $prefix/ -c ${\ abs_path($conf) } 2>&1`;
    is($?, 0, "nginx -t $conf") or diag($out);
    like($out, qr/test is successful/, "$conf: test is successful");
}

done_testing();
