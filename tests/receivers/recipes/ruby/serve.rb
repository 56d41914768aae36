# Test harness for the Ruby recipes of docs/receiving-webhooks.md (tests/it/recipes.rs).
#
# Usage: WEBHOOK_SECRET=.. ruby serve.rb rails|sinatra RECIPE
# Loads the recipe (Debian's ruby-rails, ruby-sinatra), serves it with WEBrick on 127.0.0.1 on an
# ephemeral port and prints `LISTENING <port>`. Rails: a minimal API application whose routes
# send POST /webhook/abstrakt to the recipe's WebhooksController#abstrakt.
require "rack"
require "rack/handler/webrick"
require "logger"

kind, recipe = ARGV
$stdout.sync = true

app =
  case kind
  when "rails"
    require "action_controller/railtie"

    class RecipeApp < Rails::Application
      config.load_defaults 6.1
      config.api_only = true
      config.eager_load = false
      config.secret_key_base = "recipes-test-only" * 4
      config.logger = Logger.new($stderr)
      config.log_level = :warn
      config.hosts.clear
    end
    RecipeApp.initialize!
    load File.expand_path(recipe)
    RecipeApp.routes.draw { post "/webhook/abstrakt", to: "webhooks#abstrakt" }
    RecipeApp
  when "sinatra"
    load File.expand_path(recipe)
    AbstraktWebhooks
  else
    abort "usage: serve.rb rails|sinatra RECIPE"
  end

quiet = WEBrick::Log.new($stderr, WEBrick::BasicLog::WARN)
Rack::Handler::WEBrick.run(app, Host: "127.0.0.1", Port: 0, Logger: quiet, AccessLog: []) do |server|
  puts "LISTENING #{server.config[:Port]}"
end
