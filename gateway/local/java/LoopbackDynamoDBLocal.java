// DynamoDB Local listening on one address only (it has no option for it: its Jetty connector binds every
// interface). Takes the address, then DynamoDB Local's own arguments; sets the address on the connectors of
// the server DynamoDB Local builds, then starts it, as DynamoDB Local's own main does (telemetry aside: the
// local cluster always passes -disableTelemetry). Compiled by `make setup` (gateway/local/dynamodb_local.py).

import java.lang.reflect.Field;
import java.util.Arrays;

import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

import software.amazon.dynamodb.services.local.main.CommandLineInput;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: LoopbackDynamoDBLocal ADDRESS [DynamoDB Local arguments]");
            System.exit(2);
        }
        String host = args[0];
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        if (!new CommandLineInput(rest).init()) {
            return;  // -help or -version: answered
        }
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(rest);
        int bound = 0;
        for (Field field : DynamoDBProxyServer.class.getDeclaredFields()) {
            if (Server.class.isAssignableFrom(field.getType())) {
                field.setAccessible(true);
                for (Connector connector : ((Server) field.get(proxy)).getConnectors()) {
                    ((ServerConnector) connector).setHost(host);
                    bound++;
                }
            }
        }
        if (bound == 0) {
            // A DynamoDB Local whose server this launcher cannot find must not start on every interface.
            System.err.println("LoopbackDynamoDBLocal: no Jetty connector found in this DynamoDB Local; not starting");
            System.exit(3);
        }
        proxy.start();
    }
}
